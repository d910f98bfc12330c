# The server image: pypiserver under gunicorn, started by `python -m pypibox`.
# Build: make build (or: docker build -t pypibox/server .)
ARG PYTHON_BASE=python:3.13.14-alpine3.24

# --- deps: a virtual environment from the hash-pinned lock, wheels only (no compiler) ---
FROM ${PYTHON_BASE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r /tmp/requirements.lock

# --- runtime: the venv, our package, a fixed non-root user ---
FROM ${PYTHON_BASE} AS runtime
ARG PYPI_UID=9898
ARG PYPI_GID=9898
# The only Alpine-specific step (BusyBox addgroup/adduser): one line.
RUN addgroup -S -g "${PYPI_GID}" pypi && adduser -S -D -H -h /data -s /sbin/nologin -u "${PYPI_UID}" -G pypi pypi
RUN mkdir -p /data/packages /data/auth \
    && chown "${PYPI_UID}:${PYPI_GID}" /data/packages \
    && chmod 0755 /data/auth
COPY --from=deps /opt/venv /opt/venv
COPY pypibox/ /app/pypibox/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYPI_HOST=0.0.0.0 \
    PYPI_PORT=8080 \
    PYPI_PACKAGES_DIR=/data/packages \
    PYPI_HTPASSWD=/data/auth/htpasswd
LABEL org.opencontainers.image.title="pypibox server" \
      org.opencontainers.image.description="A private Python package index: pypiserver under gunicorn, bcrypt accounts" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/pypibox/pypibox" \
      org.opencontainers.image.version="0.1.0"
WORKDIR /data
USER ${PYPI_UID}:${PYPI_GID}
VOLUME ["/data/packages"]
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "pypibox", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "pypibox"]
CMD ["serve"]
