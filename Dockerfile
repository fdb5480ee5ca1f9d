# syntax=docker/dockerfile:1
# pruneops, CPU image: one image for the pipeline's components, the model server, the
# sidecar, the rollout controller and the trigger (entrypoint `pruneops`, pick a subcommand).
#   docker build -t ghcr.io/pruneops/pruneops:0.1.0 .
#   docker run --rm -p 8080:8080 ghcr.io/pruneops/pruneops:0.1.0 serve --model digits
# GPU variant: Dockerfile.gpu. Lint: hadolint Dockerfile Dockerfile.gpu (CI runs it).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# PRUNEOPS_COMPILE=1: the wheel's sidecar hot path is compiled to C by mypyc (scripts/build_backend.py),
# which needs a C compiler here; the final image gets the built extensions, not the compiler.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PRUNEOPS_COMPILE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc=4:12.* libc6-dev=2.36-* \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/pruneops
ENV PATH=/opt/pruneops/bin:$PATH
WORKDIR /src
COPY pyproject.toml setup.py constraints.txt README.md ./
COPY scripts/build_backend.py scripts/package_tree.py scripts/
COPY pruneops/ pruneops/
COPY components/ components/
COPY pipelines/ pipelines/
COPY serving/ serving/
COPY monitoring/ monitoring/
# torch's CPU wheel (the PyPI one is a CUDA build of several GB); every other version comes
# from constraints.txt, the set the tests ran with. The transformers extra lets pipeline steps
# import encoders logged with MLflow's transformers flavor.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt '.[all]'

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.source="https://github.com/pruneops/pruneops" \
      org.opencontainers.image.description="pruneops: prune, validate, register, serve and monitor neural networks" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 pruneops \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pruneops
COPY --from=build /opt/pruneops /opt/pruneops
# State and caches go to /tmp, the one writable mount under readOnlyRootFilesystem.
ENV PATH=/opt/pruneops/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PRUNEOPS_HOME=/tmp/pruneops \
    HOME=/tmp \
    MLFLOW_DISABLE_TELEMETRY=true
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 8081 8090 8000
HEALTHCHECK NONE
ENTRYPOINT ["pruneops"]
CMD ["--help"]
