# syntax=docker/dockerfile:1
# Tagwarden gateway/worker image: one image, two roles.
#   gateway (default CMD): gunicorn -c /app/gunicorn.conf.py 'service:create_app()' on 0.0.0.0:8080
#   worker:                tagwarden worker
#   registry config:       tagwarden registry-config ... (one-shot, see docker-compose.yml)
#
# Build:  docker build -t tagwarden:local \
#           --build-arg REVISION="$(git rev-parse HEAD)" \
#           --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# Base image: pinned by tag. Pinning by digest as well
# (python:3.11-slim-bookworm@sha256:...) would make builds fully reproducible; the digest
# could not be resolved when this file was written (offline), so add it with
# `docker buildx imagetools inspect python:3.11-slim-bookworm` and keep both FROM lines equal
# (the venv is copied between stages, so both must have the same interpreter at the same path).

############################ builder: wheel + virtualenv ############################
FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/venv

WORKDIR /src

# Dependencies first, in their own layer, at the versions of the lock (`make lock` writes it
# from pyproject.toml): rebuilt only when the lock changes.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install -r requirements/runtime.txt

# Then the project itself, built as a wheel and installed (not editable) into the venv.
# README.md* : the readme is optional for the build (the wildcard may match nothing).
COPY pyproject.toml README.md* ./
COPY service ./service
COPY workers ./workers
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip install --no-deps /wheels/tagwarden-*.whl \
    && tagwarden --help > /dev/null

############################ runtime: venv + config, non-root ############################
FROM python:3.11-slim-bookworm AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="tagwarden" \
      org.opencontainers.image.description="Registry governance gateway: tag policies, promotions, scans and webhooks in front of a Docker Registry v2" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# /dev/shm is a writable tmpfs in every container, also with a read-only root filesystem:
# gunicorn keeps its worker heartbeat files there (not on the overlay filesystem) and, via
# XDG_RUNTIME_DIR, its control socket (otherwise $HOME/.gunicorn, and HOME does not exist).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/venv \
    TAGWARDEN_BIND=0.0.0.0:8080 \
    GUNICORN_CMD_ARGS="--worker-tmp-dir /dev/shm" \
    XDG_RUNTIME_DIR=/dev/shm

# Unprivileged user with a fixed uid/gid (10001) so volume ownership is predictable.
# /etc/registry is created owned by it: an empty named volume mounted there (the
# `registry-config` volume in docker-compose.yml) inherits this ownership on first use, so
# the non-root `tagwarden registry-config` can write config.yml into it.
RUN groupadd --system --gid 10001 tagwarden \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tagwarden \
    && install -d -o 10001 -g 10001 -m 0750 /etc/registry

# Everything below is owned by root and read-only for the service user.
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY gunicorn.conf.py /app/gunicorn.conf.py

USER 10001:10001

EXPOSE 8080

# Liveness of the gateway: `tagwarden healthcheck` asks /healthz on the port of
# TAGWARDEN_BIND (exit 0/1, one line, 4 s timeout). The worker runs `tagwarden healthcheck
# --worker` instead and the one-shot registry-config service disables it (docker-compose.yml).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["tagwarden", "healthcheck"]

# CMD (not ENTRYPOINT) so `command: ["tagwarden", "worker"]` in compose replaces it cleanly.
CMD ["gunicorn", "-c", "/app/gunicorn.conf.py", "service:create_app()"]
