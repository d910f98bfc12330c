#!/bin/sh
# Start (or keep) the server container and wait until it is healthy. Called by `make run`.
# Usage: start-container.sh [-e NAME=VALUE ...]   (settings come from the variables below)
set -eu
: "${DOCKER:=docker}" "${IMAGE:=pypibox/server:latest}" "${CONTAINER:=pypi}"
: "${VOLUME:=pypi}" "${AUTH_VOLUME:=pypi-auth}" "${PORT:=8080}" "${BIND:=127.0.0.1}" "${WAIT:=60}"

image_id=$($DOCKER image inspect --format '{{.Id}}' "$IMAGE")
set -- --restart unless-stopped -p "$BIND:$PORT:8080" \
    -v "$VOLUME:/data/packages" -v "$AUTH_VOLUME:/data/auth:ro" "$@"
config=$(printf '%s\n' "$image_id" "$@" | cksum | cut -d' ' -f1)

state=$($DOCKER inspect --format '{{index .Config.Labels "pypibox.config"}} {{.State.Running}}' "$CONTAINER" 2>/dev/null || true)
if [ "$state" = "$config true" ]; then
    echo "$CONTAINER is already running with this image and these settings; left as it is."
else
    if [ -n "$state" ]; then
        echo "Replacing container $CONTAINER (image or settings changed, or it was stopped)."
        $DOCKER rm -f "$CONTAINER" >/dev/null
    fi
    $DOCKER run -d --name "$CONTAINER" --label "pypibox.config=$config" "$@" "$IMAGE" >/dev/null
fi

echo "Waiting up to ${WAIT}s for $CONTAINER to become healthy..."
elapsed=0
while :; do
    health=$($DOCKER inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.Running}}' "$CONTAINER")
    case $health in
        "healthy true") break ;;
        *" false")
            echo "error: $CONTAINER stopped. Its last log lines:" >&2
            $DOCKER logs --tail 30 "$CONTAINER" >&2 || true
            exit 1 ;;
    esac
    if [ "$elapsed" -ge "$WAIT" ]; then
        echo "error: $CONTAINER is not healthy after ${WAIT}s (state: $health). Its last log lines:" >&2
        $DOCKER logs --tail 30 "$CONTAINER" >&2 || true
        exit 1
    fi
    sleep 1
    elapsed=$((elapsed + 1))
done
host=$BIND
case $host in 0.0.0.0|"") host=localhost ;; 127.0.0.1) host=localhost ;; esac
echo "The index is running: http://$host:$PORT/"
