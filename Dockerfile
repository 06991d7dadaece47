# retail-sync worker image: `docker build -t retail-sync .`
#
# The same image runs the worker (default command) and the simulators
# (`retail-sync sim erp ...`, `retail-sync sim shopify ...`); see docker-compose.yml.
# Every setting comes from RETAIL_SYNC_* environment variables (retail_sync/settings.py).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RETAIL_SYNC_WEB_HOST=0.0.0.0 \
    RETAIL_SYNC_WEB_PORT=6066 \
    RETAIL_SYNC_INGRESS_HOST=0.0.0.0 \
    RETAIL_SYNC_INGRESS_PORT=6065 \
    RETAIL_SYNC_DATADIR=/var/lib/retail-sync

# Every dependency ships binary wheels for CPython 3.11 on linux/amd64, so no compiler is needed.
WORKDIR /src
# README.m[d]: pyproject names README.md as the readme; the glob copies it when it exists
# without failing the build when it does not (at least one source, pyproject.toml, matches).
COPY pyproject.toml README.m[d] ./
COPY retail_sync ./retail_sync
COPY streams ./streams
COPY agents ./agents
COPY tables ./tables
COPY connectors ./connectors
COPY simulators ./simulators
RUN pip install . \
    && rm -rf /src/build /src/*.egg-info

# Non-root user; the data directory is created and owned here so a named volume mounted on it
# starts out writable by that user.
RUN groupadd --system --gid 10001 retailsync \
    && useradd --system --uid 10001 --gid retailsync --home-dir /home/retailsync \
       --create-home --shell /usr/sbin/nologin retailsync \
    && mkdir -p /var/lib/retail-sync \
    && chown retailsync:retailsync /var/lib/retail-sync

USER retailsync
WORKDIR /home/retailsync
VOLUME ["/var/lib/retail-sync"]
# 6065: ingress (webhooks, public); 6066: admin (views, metrics, health; keep it private)
EXPOSE 6065
EXPOSE 6066

# /health answers 200 once this worker has partitions assigned (503 while starting/rebalancing).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('RETAIL_SYNC_WEB_PORT', '6066'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=4).status == 200 else 1)"]

CMD ["retail-sync", "worker"]
