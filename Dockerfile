# doraforwarder container image.
#
#   docker build -t quay.io/doraforwarder/doraforwarder:0.1.0 --build-arg VERSION=0.1.0 .
#
# Two stages: the builder turns the source tree into a wheel and installs it,
# with its dependencies, into a virtual environment at /opt/venv; the runtime
# stage gets that virtual environment and nothing else (no compiler, no pip
# cache, no source tree). Both stages use the same base image, so the
# interpreter the venv links to exists at the same path in both.
#
# Pin the base by digest in your build pipeline for reproducible images, e.g.
#   --build-arg PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:<digest>

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Only what the wheel needs; .dockerignore keeps the rest of the tree out.
COPY pyproject.toml README.md ./
COPY requirements/runtime.lock requirements/runtime.lock
COPY doraforwarder/ doraforwarder/

# Install the locked dependency set (requirements/runtime.lock: pinned, with hashes), then build
# the project's wheel (hatchling comes from PyPI in pip's isolated build environment) and install
# it without resolving anything again. pip
# compiles the .pyc files at install time, so the read-only runtime never
# needs to write them.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements/runtime.lock \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps /wheels/doraforwarder-*.whl \
 && chmod -R g+rX,o+rX /opt/venv

# OpenShift runs the image with an arbitrary uid whose group is 0, so every file must be
# readable through its group bits: COPY --from makes the files root:root (gid 0) and keeps
# their modes, and the chmod above covers a wheel that ships owner-only (0600) files.

# --------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# Set both from the release pipeline; the defaults describe this tree.
ARG VERSION=0.1.0
ARG SOURCE_URL=https://github.com/doraforwarder/doraforwarder

LABEL org.opencontainers.image.title="doraforwarder" \
      org.opencontainers.image.description="Forwards ArgoCD deployments and WebRCA or Alertmanager incidents to Apache DevLake for DORA metrics." \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"

# A fixed numeric user (the Kubernetes manifests set runAsUser 10001 to match),
# so runAsNonRoot can be verified without reading /etc/passwd. No home
# directory and no login shell: the daemon needs neither.
RUN groupadd --system --gid 10001 doraforwarder \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin doraforwarder

COPY --from=builder /opt/venv /opt/venv

# The example configuration, owned by root and readable by everyone: the
# daemon only reads it. In Kubernetes a ConfigMap is mounted over
# /etc/doraforwarder instead.
COPY --chmod=0644 config/config.yaml /etc/doraforwarder/config.yaml

# The reference's manifests (redhat-appstudio/dora-metrics) run `sh -c "... ./main"` in /app
# with their ConfigMap mounted at /app/configs: ./main is a launcher that reads
# /app/configs/config.yaml when it is there (docker/main), so swapping only the image works.
WORKDIR /app
COPY --chmod=0755 docker/main /app/main

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in the cluster.
# HOME=/tmp: libraries that look up "~" get a writable place (an emptyDir in
# the manifests) rather than a directory that does not exist.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    DORAFORWARDER_CONFIG=/etc/doraforwarder/config.yaml

USER 10001:10001

# HTTP: /api/v1/health (liveness), /readyz (readiness), /metrics (Prometheus).
EXPOSE 8080

# No HEALTHCHECK: Kubernetes probes the HTTP endpoints above, and Docker's
# HEALTHCHECK would need a shell or curl in the image.
ENTRYPOINT ["doraforwarder"]
CMD ["run"]
