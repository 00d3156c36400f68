# airloop runtime image: Airflow + the airloop package, installed from uv.lock.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/opt/airloop/.venv \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airloop/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airloop/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRLOOP_HOME=/var/lib/airloop \
    PATH=/opt/airloop/.venv/bin:$PATH

RUN pip install --no-cache-dir uv==0.13.9 \
    && useradd --create-home --uid 50000 airloop \
    && mkdir -p /opt/airloop /opt/airflow /var/lib/airloop \
    && chown -R airloop /opt/airloop /opt/airflow /var/lib/airloop

WORKDIR /opt/airloop
COPY --chown=airloop pyproject.toml uv.lock README.md ./
COPY --chown=airloop include ./include
USER airloop
RUN uv sync --frozen --no-dev --no-cache
COPY --chown=airloop dags ./dags
COPY --chown=airloop plugins ./plugins
COPY --chown=airloop feature_repo ./feature_repo

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["airflow", "jobs", "check", "--local"]
CMD ["airflow", "version"]
