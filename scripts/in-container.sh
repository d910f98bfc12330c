#!/bin/sh
# Run `python -m pypibox ARGS...` beside the server: in its container when it runs (same
# settings, same user), else in a throwaway container of the image with the same volumes and
# no network. Called by the Makefile's yank, unyank, delete, audit, status-project, owner and
# maintainer targets. Usage: in-container.sh ARGS...
set -eu
: "${DOCKER:=docker}" "${IMAGE:=pypibox/server:latest}" "${CONTAINER:=pypi}"
: "${VOLUME:=pypi}" "${AUTH_VOLUME:=pypi-auth}"

running=$($DOCKER inspect --format '{{.State.Running}}' "$CONTAINER" 2>/dev/null || true)
if [ "$running" = true ]; then
    exec $DOCKER exec "$CONTAINER" python -m pypibox "$@"
fi
if ! $DOCKER volume inspect "$VOLUME" >/dev/null 2>&1; then
    echo "error: no volume $VOLUME and no running container $CONTAINER: nothing to act on (make run)" >&2
    exit 1
fi
exec $DOCKER run --rm --network none -v "$VOLUME:/data/packages" -v "$AUTH_VOLUME:/data/auth:ro" \
    --entrypoint python "$IMAGE" -m pypibox "$@"
