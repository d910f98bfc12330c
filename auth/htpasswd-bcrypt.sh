#!/bin/sh
# htpasswd that writes bcrypt unless an algorithm flag (-m -B -d -s -p -2 -5) is given.
# Installed as /usr/local/bin/htpasswd in the auth image; runs Apache's /usr/bin/htpasswd.
set -eu
real=${HTPASSWD_REAL:-/usr/bin/htpasswd}
cost=${HTPASSWD_COST:-12}
algo=no
has_cost=no
takes_value=no
for arg in "$@"; do
    if [ "$takes_value" = yes ]; then
        takes_value=no
        continue
    fi
    case $arg in
        --) break ;;
        -[!-]*)
            case $arg in *[mBdsp25]*) algo=yes ;; esac
            case $arg in *C*) has_cost=yes ;; esac
            case $arg in *[Cr]) takes_value=yes ;; esac ;;
        *) break ;;
    esac
done
if [ "$algo" = yes ]; then
    exec "$real" "$@"
elif [ "$has_cost" = yes ]; then
    exec "$real" -B "$@"
else
    exec "$real" -B -C "$cost" "$@"
fi
