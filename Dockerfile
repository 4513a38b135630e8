# worksession: a slim image that runs `worksession migrate`, then serves in production mode:
# the public API and WebSockets on port 8000, /internal/* and /metrics on port 9000 (keep
# that one off the public network). It refuses to start without secrets of its own:
#   docker build -t worksession .
#   docker run --env-file secrets.env -p 8000:8000 worksession   # embedded SQLite, one worker
# where secrets.env (never committed) sets WORKSESSION_JWT_SECRET and
# WORKSESSION_SERVICE_JWT_SECRET (README, Security). compose.yaml runs the production shape
# (PostgreSQL, Redis, two workers).

# --- builder: the service as a wheel (no compiler needed: every dependency ships wheels)
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

# --- runtime: the wheel and its dependencies in a virtualenv, run as a non-root user
FROM python:3.11-slim AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    WORKSESSION_ENV=production \
    WORKSESSION_INTERNAL_PORT=9000 \
    WORKSESSION_LOG_FORMAT=json
COPY --from=builder /wheels /tmp/wheels
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/worksession \
        --create-home --shell /usr/sbin/nologin worksession
COPY docker/entrypoint.sh /usr/local/bin/worksession-entrypoint
# The working directory is where the embedded default keeps its SQLite file.
WORKDIR /var/lib/worksession
USER 10001:10001
EXPOSE 8000
# Port 9000 (the internal API and the metrics) is deliberately not EXPOSEd: `docker run -P`
# publishes every exposed port, and this one must stay on the private network.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["worksession-entrypoint"]
