"""airflow_settings.yaml (Astro format) to Airflow's import files: env references, conversion, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airloop_tools.airflow_settings import convert, expand, read_settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_projects_file_reads_with_defaults_and_takes_secrets_from_the_environment():
    data = read_settings(
        ROOT / "airflow_settings.yaml", env={"AIRLOOP_SMTP_PASSWORD": "s3cret", "AIRLOOP_SMTP_PORT": "2525"}
    )
    smtp = data["connections"]["smtp_default"]
    assert smtp["conn_type"] == "smtp" and smtp["host"] == "127.0.0.1" and smtp["port"] == 2525
    assert smtp["password"] == "s3cret" and "login" not in smtp
    assert json.loads(smtp["extra"]) == {
        "disable_ssl": "true",
        "disable_tls": "true",
        "from_email": "airloop@localhost",
    }
    assert data["variables"] == {"airloop_alert_emails": "mlops-oncall@example.com"}
    assert data["pools"]["feast_online_writes"] == {
        "slots": 1,
        "description": "Serialises writes to the embedded SQLite online store.",
        "include_deferred": False,
    }


def test_an_unset_reference_without_default_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"\$\{DB_PASSWORD\}"):
        expand({"a": ["x ${DB_PASSWORD} y"]}, env={})
    assert expand("${A:-1}/${B}", env={"B": "2"}) == "1/2"


def test_conversion_keeps_uris_and_string_extras_and_rejects_unknown_sections():
    out = convert(
        {
            "airflow": {
                "connections": [
                    {"conn_id": "pg", "conn_uri": "postgresql://u:p@h:5432/db"},
                    {"conn_id": "s3", "conn_type": "aws", "conn_extra": '{"region_name": "eu-west-1"}'},
                ],
                "variables": [{"variable_name": "n", "variable_value": 3}],
            }
        }
    )
    assert out["connections"]["pg"] == "postgresql://u:p@h:5432/db"
    assert out["connections"]["s3"] == {"conn_type": "aws", "extra": '{"region_name": "eu-west-1"}'}
    assert out["variables"] == {"n": "3"} and out["pools"] == {}
    with pytest.raises(ValueError, match="unknown keys"):
        convert({"airflow": {"conections": []}})
    with pytest.raises(ValueError, match="conn_type"):
        convert({"airflow": {"connections": [{"conn_id": "x"}]}})
