# airloop runtime image: Airflow 3.3 + the airloop package, installed from uv.lock (no resolution at build time).
# One image for every Airflow component, the Celery workers and the MLflow server (see docker-compose.yaml).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/opt/airloop/.venv \
    UV_LINK_MODE=copy \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airloop/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airloop/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRLOOP_HOME=/var/lib/airloop \
    MLFLOW_DISABLE_TELEMETRY=true \
    FEAST_USAGE=False \
    PATH=/opt/airloop/.venv/bin:$PATH

RUN pip install --no-cache-dir uv==0.13.9 \
    && useradd --create-home --uid 50000 --gid 0 airloop \
    && mkdir -p /opt/airloop /opt/airflow/logs /opt/airflow/secrets /var/lib/airloop \
    && chown -R 50000:0 /opt/airloop /opt/airflow /var/lib/airloop

WORKDIR /opt/airloop
COPY --chown=50000:0 pyproject.toml uv.lock README.md ./
COPY --chown=50000:0 include ./include
USER 50000
RUN uv sync --frozen --no-dev --no-cache
COPY --chown=50000:0 dags ./dags
COPY --chown=50000:0 plugins ./plugins
COPY --chown=50000:0 feature_repo ./feature_repo
COPY --chown=50000:0 production ./production

# compose gives each service its own check; this default suits the scheduler-type jobs
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["airflow", "jobs", "check", "--local"]
CMD ["airflow", "version"]
