#!/bin/sh
# Check a roles or a tokens file as the server reads it (pypibox/roles.py, pypibox/tokens.py).
# Usage: check-teams.sh roles|tokens FILE. A missing file is fine (no roles, no tokens).
# Exit 1 naming the first wrong line.
set -eu
kind=${1:?usage: check-teams.sh roles|tokens FILE}
file=${2:?usage: check-teams.sh roles|tokens FILE}
case $kind in roles|tokens) ;; *) echo "error: unknown kind $kind (roles or tokens)" >&2; exit 2 ;; esac
if [ ! -e "$file" ]; then
    echo "$file: no $kind file (none in force)"
    exit 0
fi
if [ ! -f "$file" ] || [ ! -r "$file" ]; then
    echo "error: $file is not a readable file" >&2
    exit 1
fi
# No regex intervals ({n}): Debian's mawk has none.
awk -v kind="$kind" -v file="$file" '
    function fail(msg) { printf "error: %s line %d: %s\n", file, NR, msg > "/dev/stderr"; bad = 1; exit 1 }
    function is_time(s) {
        if (s ~ /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]$/) return 1
        return s ~ /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z$/
    }
    kind == "roles" {
        line = $0; sub(/#.*/, "", line)
        n = split(line, w, /[ \t]+/); k = 0
        for (i = 1; i <= n; i++) if (w[i] != "") f[++k] = w[i]
        if (k == 0) next
        role = tolower(f[1])
        if (role != "admin" && role != "owner" && role != "maintainer")
            fail("\"" f[1] "\" is not a role (admin, owner or maintainer)")
        if (k < 2 || f[2] ~ /:/ || length(f[2]) > 255) fail("give a user name after " role)
        if (role == "admin" && k > 2) fail("admin takes a user name only (admins act on every project)")
        if (role != "admin" && k < 3) fail(role " " f[2] " needs one or more project name patterns")
        for (i = 3; i <= k; i++)
            if (f[i] !~ /^[A-Za-z0-9._*?-]+$/ || length(f[i]) > 200)
                fail("\"" f[i] "\" is not a project name pattern (letters, digits, . _ - and *)")
        rules++
        next
    }
    kind == "tokens" {
        if ($0 ~ /^[ \t]*$/ || $0 ~ /^[ \t]*#/) next
        if (NF != 6) fail("expected 6 fields (name user projects expires created hash), found " NF " (half-written file?)")
        if ($1 !~ /^[A-Za-z0-9][A-Za-z0-9._-]*$/ || length($1) > 64) fail("\"" $1 "\" is not a token name")
        if ($1 in seen) fail("a second token named " $1)
        seen[$1] = 1
        if ($2 ~ /[:#]/ || length($2) > 255) fail("\"" $2 "\" is not a user name")
        if ($3 != "*" && $3 !~ /^[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*$/) fail("\"" $3 "\" is not * or a list of project names")
        if ($4 != "never" && !is_time($4)) fail("\"" $4 "\" is not a time like 2026-03-01T12:00:00Z or never")
        if (!is_time($5)) fail("\"" $5 "\" is not a time like 2026-03-01T12:00:00Z")
        if ($6 !~ /^sha256:[0-9a-f]+$/ || length($6) != 71) fail("the hash is not sha256:<64 hex digits>")
        rules++
    }
    END {
        if (bad) exit 1
        printf "%s: %d %s, well formed\n", file, rules, (kind == "roles" ? "rules" : "tokens")
    }
' "$file"
