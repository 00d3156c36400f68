"""Sources and sinks: where a day's landing files come from (the local landing folder or S3) and where its
published outputs go besides the lake (S3, optional), through boto3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airloop import lake
from airloop.config import Settings

SUFFIXES = (".csv", ".parquet")


def local_files(settings: Settings, ds: str) -> list[Path]:
    """The landing files of ``ds`` in the local landing folder."""
    return sorted(p for p in lake.landing(settings, ds).glob("*") if p.is_file() and p.suffix in SUFFIXES)


def s3_files(
    settings: Settings, ds: str, workdir: Path, client_kwargs: dict[str, Any] | None = None
) -> dict[Path, str]:
    """Download the objects under ``s3://<bucket>/<prefix for ds>`` into ``workdir``; return
    local path -> ``s3://`` URI.
    Credentials and endpoint come from ``client_kwargs`` (e.g. an Airflow connection) or boto3's
    standard environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``...), never from code."""
    import boto3

    client = boto3.client("s3", **(client_kwargs or {}))
    prefix = lake.s3_landing_prefix(settings, ds)
    keys = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
        if obj["Key"].endswith(SUFFIXES)
    ]
    files = {}
    for key in sorted(keys):
        local = workdir / key.rsplit("/", 1)[-1]
        client.download_file(settings.s3_bucket, key, str(local))
        files[local] = f"s3://{settings.s3_bucket}/{key}"
    return files


def describe(settings: Settings, ds: str) -> str:
    """Where the landing batch of ``ds`` is expected, for error messages."""
    if settings.source == "s3":
        return f"s3://{settings.s3_bucket}/{lake.s3_landing_prefix(settings, ds)}"
    return str(lake.landing(settings, ds))


def export_partition(settings: Settings, zone: str, ds: str, client_kwargs: dict[str, Any] | None = None) -> str:
    """Upload the lake partition file of ``zone`` for ``ds`` to ``s3://<s3_output_bucket>/<s3_output_prefix>``;
    return its URI. One PUT per file: readers see the previous object or the new one, never part of it,
    and a rerun of the same day overwrites the same key."""
    import boto3

    if not settings.s3_output_bucket:
        raise ValueError("no output bucket configured: set AIRLOOP_S3_OUTPUT_BUCKET")
    key = lake.s3_output_key(settings, zone, ds)
    client = boto3.client("s3", **(client_kwargs or {}))
    client.upload_file(str(lake.data_file(settings, zone, ds)), settings.s3_output_bucket, key)
    return f"s3://{settings.s3_output_bucket}/{key}"
