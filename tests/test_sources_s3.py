"""S3 source against a real S3-compatible endpoint on loopback (moto in server mode), through boto3."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import boto3
import pandas as pd
import pytest

from airloop import lake
from airloop.ingest import ingest_batch
from airloop.simulate import simulate_day
from airloop.validate import validate_batch

DAY = "2026-01-04"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"moto_server did not start on {url}")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_settings(settings, s3_endpoint, monkeypatch):
    monkeypatch.setenv("AIRLOOP_SOURCE", "s3")
    monkeypatch.setenv("AIRLOOP_S3_BUCKET", "landing-test")
    # credentials and endpoint from the standard environment, as in production
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    from airloop.config import get_settings

    s = get_settings()
    client = boto3.client("s3")
    if "landing-test" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="landing-test")
    for obj in client.list_objects_v2(Bucket="landing-test").get("Contents", []):
        client.delete_object(Bucket="landing-test", Key=obj["Key"])
    return s, client


def test_ingest_from_s3_csv_and_parquet_parts(s3_settings, tmp_path):
    settings, client = s3_settings
    df = simulate_day(date.fromisoformat(DAY), settings)
    half = len(df) // 2
    df.iloc[:half].to_csv(tmp_path / "a.csv", index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    df.iloc[half:].to_parquet(tmp_path / "b.parquet")
    client.upload_file(str(tmp_path / "a.csv"), "landing-test", f"landing/ds={DAY}/a.csv")
    client.upload_file(str(tmp_path / "b.parquet"), "landing-test", f"landing/ds={DAY}/b.parquet")
    client.put_object(Bucket="landing-test", Key=f"landing/ds={DAY}/_SUCCESS", Body=b"")
    client.put_object(Bucket="landing-test", Key="landing/ds=2026-01-05/other.csv", Body=b"x\n1\n")

    summary = ingest_batch(settings, DAY)
    assert summary["rows"] == len(df)
    assert summary["sources"] == [
        f"s3://landing-test/landing/ds={DAY}/a.csv",
        f"s3://landing-test/landing/ds={DAY}/b.parquet",
    ]
    assert validate_batch(settings, DAY)["success"]
    raw = pd.read_parquet(lake.data_file(settings, "raw", DAY))
    assert sorted(raw["customer_id"]) == sorted(df["customer_id"])


def test_explicit_client_kwargs_override_the_environment(s3_settings, s3_endpoint, monkeypatch, tmp_path):
    """What an Airflow connection provides (see plugins/airloop_dag_support.s3_client_kwargs)."""
    settings, client = s3_settings
    simulate_day(date.fromisoformat(DAY), settings).to_parquet(tmp_path / "x.parquet")
    client.upload_file(str(tmp_path / "x.parquet"), "landing-test", f"landing/ds={DAY}/x.parquet")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    kwargs = {"endpoint_url": s3_endpoint, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    assert ingest_batch(settings, DAY, s3_client_kwargs=kwargs)["rows"] == settings.rows_per_day


def test_credentials_and_endpoint_come_from_the_airloop_s3_connection(s3_settings, s3_endpoint, monkeypatch, tmp_path):
    """The daily DAG's ingest passes ``s3_client_kwargs(settings.s3_conn_id)``: an Airflow connection
    (here from ``AIRFLOW_CONN_AIRLOOP_S3``, as a secrets backend gives it) beats boto3's environment."""
    from airloop_dag_support import s3_client_kwargs

    settings, client = s3_settings
    simulate_day(date.fromisoformat(DAY), settings).to_parquet(tmp_path / "x.parquet")
    client.upload_file(str(tmp_path / "x.parquet"), "landing-test", f"landing/ds={DAY}/x.parquet")
    # boto3's own environment has no credentials and an endpoint where nothing listens
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it cached the fixture's credentials
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert settings.s3_conn_id == "airloop_s3"
    assert s3_client_kwargs(settings.s3_conn_id) == {}, "no connection: boto3's environment applies"
    conn = {
        "conn_type": "aws",
        "login": "conn-key",
        "password": "conn-secret",
        "extra": {"endpoint_url": s3_endpoint, "region_name": "eu-west-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOOP_S3", json.dumps(conn))
    kwargs = s3_client_kwargs(settings.s3_conn_id)
    assert kwargs == {
        "aws_access_key_id": "conn-key",
        "aws_secret_access_key": "conn-secret",
        "endpoint_url": s3_endpoint,
        "region_name": "eu-west-1",
    }
    assert ingest_batch(settings, DAY, s3_client_kwargs=kwargs)["rows"] == settings.rows_per_day
    import botocore.exceptions

    with pytest.raises(botocore.exceptions.NoCredentialsError):  # without them, no credentials at all
        ingest_batch(settings, DAY)


def test_no_objects_for_the_day_is_a_clear_error(s3_settings):
    settings, _ = s3_settings
    with pytest.raises(FileNotFoundError, match=f"under s3://landing-test/landing/ds={DAY}/"):
        ingest_batch(settings, DAY)


def test_a_published_partition_is_exported_to_the_output_bucket_and_a_rerun_overwrites_it(s3_settings):
    from airloop.sources import export_partition
    from airloop.storage import write_parquet

    settings, client = s3_settings
    settings = settings.model_copy(update={"s3_output_bucket": "landing-test"})
    with pytest.raises(ValueError, match="AIRLOOP_S3_OUTPUT_BUCKET"):
        export_partition(settings.model_copy(update={"s3_output_bucket": None}), "predictions", DAY)
    preds = pd.DataFrame({"customer_id": [1, 2], "score": [0.2, 0.9], "model_version": ["1", "1"]})
    for version in ("1", "2"):  # a rerun of the day (a new champion) replaces the object
        write_parquet(preds.assign(model_version=version), lake.data_file(settings, "predictions", DAY))
        uri = export_partition(settings, "predictions", DAY)
    assert uri == f"s3://landing-test/predictions/ds={DAY}/data.parquet"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="landing-test", Prefix="predictions/")["Contents"]]
    assert keys == [f"predictions/ds={DAY}/data.parquet"]
    body = client.get_object(Bucket="landing-test", Key=keys[0])["Body"].read()
    got = pd.read_parquet(io.BytesIO(body))
    assert list(got["model_version"]) == ["2", "2"] and list(got["score"]) == [0.2, 0.9]
