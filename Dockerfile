# hubwatch container: `docker build -t hubwatch .` then see compose.yaml.
# Two stages: the builder installs everything into a virtualenv (compilers and pip caches stay
# behind); the runtime stage copies only that virtualenv onto a slim Python.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# CPU-only torch first, from the PyTorch CPU index: the PyPI wheel drags in ~3 GB of CUDA
# libraries that a byte-sampling watcher never uses. The project's own install then finds torch
# already satisfied (pyproject allows <2.14).
RUN python -m venv /opt/venv \
    && pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fingerprints ./fingerprints
COPY store ./store
COPY bot ./bot
RUN pip install . && pip check

FROM ${PYTHON_IMAGE} AS runtime
# A fixed, unprivileged uid/gid 10001 so a bind-mounted /data can be chowned to it
# (chown 10001:10001 ./data); a named volume inherits /data's ownership from the image.
RUN groupadd --system --gid 10001 hubwatch \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/hubwatch hubwatch \
    && mkdir /data \
    && chown hubwatch:hubwatch /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HUBWATCH_DB=/data/hubwatch.db \
    HUBWATCH_LOG_FORMAT=json \
    HUBWATCH_METRICS_HOST=0.0.0.0 \
    HUBWATCH_METRICS_PORT=9100 \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /home/hubwatch
VOLUME ["/data"]
EXPOSE 9100
# `doctor --quick` checks settings, the store file and disk locally, and asks the watcher's
# /healthz whether a feed poll succeeded recently (3 cycles of the slowest feed); no Hub traffic.
HEALTHCHECK --interval=60s --timeout=15s --start-period=120s --retries=3 \
    CMD ["hubwatch", "doctor", "--quick"]
ENTRYPOINT ["hubwatch"]
CMD ["watch"]
