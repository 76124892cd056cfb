# One image for every process type (deploy/k8s/ has a manifest for each):
#   web:    python manage.py serve --no-devnet --host 0.0.0.0 --port 8000   (the default CMD)
#   worker: celery -A config worker --loglevel info
#   beat:   celery -A config beat --loglevel info --schedule /tmp/beat/celerybeat-schedule
#   host:   DJANGO_SETTINGS_MODULE=config.settings.host python manage.py runhost --host 0.0.0.0 ...
#   migrate (release step): python manage.py migrate --no-input
# Stage 1 builds the Python environment (llama-cpp-python compiles here) and the npm assets.
FROM python:3.11-slim-bookworm AS build
# A portable llama.cpp build: the image runs on whatever CPU the scheduler picks, not only
# on one with the build machine's instruction set.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 UV_LINK_MODE=copy CMAKE_ARGS="-DGGML_NATIVE=OFF"
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN python -m venv /venv && /venv/bin/pip install uv==0.13.8 \
 && /venv/bin/uv pip sync --python /venv/bin/python requirements.lock
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN node scripts/vendor-static.js \
 && SECRET_KEY=build-only DJANGO_SETTINGS_MODULE=config.settings.base VAR_DIR=/app/var \
    /venv/bin/python manage.py collectstatic --no-input

# Stage 2: only what runs. libgomp for llama.cpp's threads; postgresql-client for the
# backup script (scripts/pg-backup-verify.sh); curl for the container's own health check.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 curl postgresql-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 app
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=config.settings.production \
    VAR_DIR=/app/var
WORKDIR /app
COPY --from=build /venv /venv
COPY --from=build --chown=app:app /app /app
RUN rm -rf /app/node_modules && mkdir -p /app/var && chown app:app /app/var
USER app
EXPOSE 8000 9000
# Liveness only: the full /health also checks the chain and the hosts, whose outage is no
# reason to restart this container.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/health/live || exit 1
CMD ["python", "manage.py", "serve", "--no-devnet", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
