#!/bin/sh
# Read a roles or tokens file on standard input and put it, atomically, at DEST, readable by
# the server's group only. Empty input installs an empty file: no roles, or no tokens (that
# is how the last token is revoked). Runs inside the auth image.
# Usage: install-file roles|tokens DEST
set -eu
kind=${1:?usage: install-file roles|tokens DEST}
dest=${2:?usage: install-file roles|tokens DEST}
gid=${PYPI_GID:-9898}
dir=$(dirname "$dest")
tmp="$dir/.$kind.new.$$"
trap 'rm -f "$tmp"' EXIT
cat >"$tmp"
check-teams "$kind" "$tmp" >/dev/null
chown "0:$gid" "$dir" "$tmp"
chmod 0750 "$dir"
chmod 0640 "$tmp"
mv -f "$tmp" "$dest"
trap - EXIT
count=$(grep -cv -e '^[[:space:]]*$' -e '^[[:space:]]*#' "$dest" || true)
echo "installed the $kind file ($count entries) into the pypi-auth volume"
