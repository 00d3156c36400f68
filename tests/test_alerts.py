"""Alert emails without a scheduler: the message a user gets, sent through SmtpNotifier to a real SMTP server."""

from __future__ import annotations

import pytest

from live_airflow import SmtpInbox, body_text, smtp_env


@pytest.fixture
def inbox(monkeypatch):
    server = SmtpInbox()
    for key, value in smtp_env(server, {"": "a@example.com, b@example.com"}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080")
    yield server
    server.stop()


def test_send_event_emails_the_configured_recipients(inbox, monkeypatch):
    from airloop_alerts import send_event

    monkeypatch.setenv("AIRFLOW_VAR_AIRLOOP_ALERT_EMAILS_PROMOTION", "ml-team@example.com")
    assert send_event("promotion", "airloop_churn v3 promoted to champion", "roc_auc 0.81 >= 0.79 (champion v2)")
    assert send_event("rollback", "champion rolled back to v2", "by hand: v3 scored badly")
    promoted, rolled_back = inbox.messages
    assert promoted["to"] == "ml-team@example.com" and promoted["from"] == "airloop@test"
    assert promoted["subject"] == "[airloop] airloop_churn v3 promoted to champion"
    assert "roc_auc 0.81 &gt;= 0.79" in body_text(promoted)
    assert rolled_back["to"] == "a@example.com, b@example.com"


def test_an_unreachable_smtp_server_does_not_raise(inbox, monkeypatch, caplog):
    from airloop_alerts import send_event

    inbox.stop()
    assert send_event("failure", "x failed", "boom") is False
    assert "not emailed" in caplog.text


def test_failure_email_of_a_quarantined_batch_names_dag_task_date_and_the_failed_expectations():
    from airflow.sdk.exceptions import AirflowFailException

    from airloop.quarantine import BatchQuarantined
    from airloop_alerts import failure_email

    reason = (
        "batch 2026-01-06 quarantined at /lake/quarantine/ds=2026-01-06: 1 of 9 blocking expectations failed:\n"
        "- expect_table_columns_to_match_set: observed ['customer_id', 'plan_tier']"
    )
    try:
        try:
            raise BatchQuarantined(reason)
        except BatchQuarantined as exc:
            raise AirflowFailException(str(exc)) from exc
    except AirflowFailException as exc:
        error = exc
    run_id = "scheduled__2026-01-07T00:00:00+00:00"
    kind, subject, body, link = failure_email("airloop_daily", "validate", "2026-01-06", run_id, error, 1)
    assert kind == "quarantine"
    assert subject == "airloop_daily.validate batch 2026-01-06 quarantined (2026-01-06)"
    assert "expect_table_columns_to_match_set: observed" in body and "release" in body
    assert (
        link.startswith("http://")
        and "/dags/airloop_daily/runs/scheduled__2026-01-07T00%3A00%3A00%2B00%3A00/tasks/validate" in link
    )
    assert link in body


def test_failure_email_of_an_ordinary_error_says_what_went_wrong():
    from airloop_alerts import failure_email

    kind, subject, body, _ = failure_email(
        "airloop_daily", "ingest", "2026-01-05", "manual__x", FileNotFoundError("no landing batch for 2026-01-05"), 3
    )
    assert kind == "failure" and subject == "airloop_daily.ingest failed for 2026-01-05"
    assert "FileNotFoundError: no landing batch for 2026-01-05" in body and "try_number=3" in body
