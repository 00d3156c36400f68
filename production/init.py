"""One-shot set-up of the compose topology (the ``airflow-init`` service): metadata DB, MLflow DB, buckets,
users and roles (``roles.py``). Idempotent: safe to run on every ``docker compose up``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import psycopg2

BUCKETS = (os.environ["AIRLOOP_S3_BUCKET"], os.environ["AIRLOOP_S3_OUTPUT_BUCKET"], "airloop-mlflow")


def main() -> None:
    conn = psycopg2.connect(
        host=os.environ.get("POSTGRES_HOST", "postgres"),  # compose's service; the live test's cluster sets both
        port=int(os.environ.get("POSTGRES_PORT", "5432")),
        user="airflow",
        password=os.environ["POSTGRES_PASSWORD"],
        dbname="airflow",
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = 'mlflow'")
        if cur.fetchone() is None:
            cur.execute("CREATE DATABASE mlflow")
    conn.close()
    subprocess.run(["airflow", "db", "migrate"], check=True)
    s3 = boto3.client("s3")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
    # users and roles from .env (FAB auth manager): nobody anonymous, each role what its people do
    subprocess.run([sys.executable, str(Path(__file__).with_name("roles.py"))], check=True)
    print("airloop init: metadata DB migrated, mlflow DB and buckets present, users and roles in place")


if __name__ == "__main__":
    main()
