# syntax=docker/dockerfile:1.7
# aai-proxy: a multi-stage build with uv. Dependencies get their own layer, keyed on
# pyproject.toml only, so a code change rebuilds in seconds.

ARG PYTHON_VERSION=3.11

# --- build: a virtualenv with the dependencies, then the project ---------------------------
FROM python:${PYTHON_VERSION}-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    VIRTUAL_ENV=/opt/venv
RUN uv venv /opt/venv
WORKDIR /app

# Dependencies only (no source yet): this layer is reused until pyproject.toml changes.
# A production image carries neither the emulator (numpy) nor its recogniser (Whisper);
# `--build-arg PLAYGROUND=true` adds both, for running with no ASSEMBLYAI_API_KEY.
ARG PLAYGROUND=false
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/uv \
    if [ "$PLAYGROUND" = true ]; then set -- --extra emulator --extra recognition; fi \
    && uv pip install --python /opt/venv/bin/python -r pyproject.toml "$@"

# The project itself. Editable, because Alembic's migrations/ and alembic.ini (and the
# static client) are found next to the source, not inside site-packages.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --python /opt/venv/bin/python --no-deps -e . \
    && chmod 0755 docker/entrypoint.sh

# --- runtime: no uv, no build cache, a non-root user -----------------------------------------
# espeak-ng and sox are left out: only the emulator (no ASSEMBLYAI_API_KEY) uses them, and it
# falls back without them (a synthetic voice for agent replies, WAV uploads only).
FROM python:${PYTHON_VERSION}-slim AS runtime
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=app:app /app /app
WORKDIR /app
# The entrypoint migrates once, so `serve` need not do it again.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    MIGRATE_ON_START=false
# Numeric, so the host and orchestrators can tell it is not root (the `app` user above).
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz\", timeout=2)"]
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["aai-proxy", "serve"]
