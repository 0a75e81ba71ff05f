# syntax=docker/dockerfile:1
# The serving image: `pip install dropnet` without extras (no torch), running `dropnet serve` on
# KServe's ports: 8080 HTTP (KServe v2 REST, health) and 8081 gRPC (dropnet.v1 and KServe v2).
#
#   docker build -t dropnet-serve .
#   docker run --rm -p 8080:8080 -p 8081:8081 -v "$PWD/models:/models:ro" dropnet-serve
#
# docs/deploy.md explains the choices; tests/test_deploy.py runs this recipe's install step
# (deploy/install.sh) and its ENTRYPOINT + CMD in a fresh venv, as no container engine runs there.

# python:3.11-slim, pinned by tag: CPython 3.11 is the interpreter the project is developed and
# tested on; slim is Debian without compilers, which nothing here needs (every dependency ships
# manylinux wheels). A minor-version tag keeps getting Debian and CPython patch releases; for a
# build that never changes, pass a digest: --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim

# Stage 1: a wheel of the source tree (the files .dockerignore lets through: what the build reads).
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dropnet dropnet
COPY trainer trainer
COPY exporter exporter
COPY server server
COPY protos protos
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Stage 2: the serving install from that wheel; no source tree, tests, build tools or pip cache.
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    --mount=type=bind,source=deploy/install.sh,target=/install.sh \
    sh /install.sh /wheels/dropnet-*.whl
# A numeric non-root user (Kubernetes' runAsNonRoot can only verify a numeric USER). /models
# belongs to root: the server only reads it; mount the packages there read-only.
RUN useradd --system --uid 10001 --gid 0 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin dropnet \
    && mkdir -m 0755 /models
USER 10001:0
WORKDIR /tmp

EXPOSE 8080 8081
# Ready once every model under /models is loaded (KServe v2 REST health; no token needed).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4)"]

# --insecure: the image binds 0.0.0.0 without TLS or a token, which dropnet serve refuses without it.
# That is the usual setup behind KServe, where the mesh or gateway terminates TLS and authenticates
# clients. To serve clients directly, replace the flags (docker run IMAGE FLAGS..., or a pod's args)
# with --tls-cert/--tls-key and --token-file ones instead of --insecure (docs/deploy.md).
ENTRYPOINT ["dropnet", "serve"]
CMD ["--models", "/models", "--host", "0.0.0.0", "--port", "8081", "--http-port", "8080", "--insecure"]
