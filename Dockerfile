# One image for every process type: web, worker, beat and host (see deploy/k8s/).
# Stage 1 builds the Python environment (llama-cpp-python compiles here) and the npm assets.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 UV_LINK_MODE=copy
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
 && SECRET_KEY=build-only DJANGO_SETTINGS_MODULE=config.settings.base \
    /venv/bin/python manage.py collectstatic --no-input

# Stage 2: only what runs.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 app
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=config.settings.production \
    VAR_DIR=/app/var
WORKDIR /app
COPY --from=build /venv /venv
COPY --from=build --chown=app:app /app /app
RUN rm -rf /app/node_modules && mkdir -p /app/var && chown app:app /app/var
USER app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/health || exit 1
# Other process types override the command:
#   worker: celery -A config worker -l info      beat: celery -A config beat -l info
#   host:   python manage.py runhost ...
CMD ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
