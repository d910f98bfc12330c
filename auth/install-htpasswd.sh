#!/bin/sh
# Read an htpasswd file on standard input and put it, atomically, at DEST (default
# /data/auth/htpasswd), readable by the server's group only. Runs inside the auth image.
set -eu
dest=${1:-/data/auth/htpasswd}
gid=${PYPI_GID:-9898}
dir=$(dirname "$dest")
tmp="$dir/.htpasswd.new.$$"
trap 'rm -f "$tmp"' EXIT
cat >"$tmp"
if [ ! -s "$tmp" ]; then
    echo "error: refusing to install an empty htpasswd file" >&2
    exit 1
fi
check-htpasswd "$tmp" >/dev/null
chown "0:$gid" "$dir" "$tmp"
chmod 0750 "$dir"
chmod 0640 "$tmp"
mv -f "$tmp" "$dest"
trap - EXIT
echo "installed $(grep -c ':' "$dest") accounts into the pypi-auth volume"
