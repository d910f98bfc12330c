#!/bin/sh
# Check an htpasswd file: it exists, has users, and every hash is bcrypt.
# Usage: check-htpasswd.sh [FILE]   (default: auth/htpasswd). Exit 1 naming weak users.
set -eu
file=${1:-auth/htpasswd}
if [ ! -f "$file" ]; then
    echo "error: $file does not exist. Create it with: make -C auth adduser USER=<name>" >&2
    exit 1
fi
if [ ! -r "$file" ]; then
    echo "error: $file is not readable" >&2
    exit 1
fi
awk -v file="$file" '
    /^[[:space:]]*$/ || /^[[:space:]]*#/ { next }
    {
        i = index($0, ":")
        if (i < 2) { printf "error: %s line %d is not of the form user:hash\n", file, NR > "/dev/stderr"; bad = 1; next }
        user = substr($0, 1, i - 1); hash = substr($0, i + 1)
        sub(/[[:space:]]+$/, "", hash)
        users++
        if (hash ~ /^\$2[aby]\$[0-9][0-9]\$[.\/A-Za-z0-9]+$/ && length(hash) == 60) next
        kind = "plain text"
        if (hash ~ /^\$apr1\$/) kind = "MD5 ($apr1$)"
        else if (hash ~ /^\{SHA\}/) kind = "SHA-1 ({SHA})"
        else if (hash ~ /^\$[156]\$/) kind = "crypt " substr(hash, 1, 3)
        else if (hash ~ /^\$2/) kind = "malformed bcrypt"
        else if (hash ~ /^[.\/A-Za-z0-9]+$/ && length(hash) == 13) kind = "DES crypt"
        printf "error: user %s has a %s hash, not bcrypt; fix with: htpasswd -B %s %s\n", user, kind, file, user > "/dev/stderr"
        bad = 1
    }
    END {
        if (bad) exit 1
        if (users == 0) {
            printf "error: %s has no users. Add one with: make -C auth adduser USER=<name>\n", file > "/dev/stderr"
            exit 1
        }
        printf "%s: %d users, all bcrypt\n", file, users
    }
' "$file"
