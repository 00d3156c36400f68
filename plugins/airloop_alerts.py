"""Alert emails, sent by the SMTP provider's ``SmtpNotifier`` through the ``smtp_default`` connection.

* ``notify_failure``: ``on_failure_callback`` of every airloop task (in ``dag_defaults()``): one email per
  final failure (not per retry), naming DAG, task and date, the error in plain words (the failed
  expectations when a batch was quarantined) and a link to the task's log in the UI.
* ``notify_dag_failure``: ``on_failure_callback`` of every airloop DAG: the safety net for a task whose
  process was killed (OOM killer, ``kill -9``) before its own callback could run.
* ``notify_retrain``: ``on_success_callback`` of the monitor's ``trigger_retrain``.
* ``send_event(kind, subject, body)``: any other event (promotion, rollback, ...).

Recipients: the Airflow Variable ``airloop_alert_emails_<kind>`` if set, else ``airloop_alert_emails``
(comma-separated; ``airflow_settings.yaml`` sets it; ``AIRFLOW_VAR_AIRLOOP_ALERT_EMAILS`` works too).
Cheap to import: Airflow and the SMTP provider are imported when an email is sent, not at DAG parse time.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

SMTP_CONN_ID = "smtp_default"
RECIPIENTS_VARIABLE = "airloop_alert_emails"
DEFAULT_FROM = "airloop@localhost"

log = logging.getLogger(__name__)


def recipients(kind: str) -> list[str]:
    """Addresses for an event kind: Variable ``airloop_alert_emails_<kind>``, else ``airloop_alert_emails``."""
    from airflow.sdk import Variable

    for key in (f"{RECIPIENTS_VARIABLE}_{kind}", RECIPIENTS_VARIABLE):
        value = Variable.get(key, default=None)
        if value:
            return [a.strip() for a in str(value).split(",") if a.strip()]
    return []


def send_event(kind: str, subject: str, body: str, link: str | None = None, context: Any = None) -> bool:
    """Email ``subject`` / ``body`` (plain text) to the recipients of ``kind``; True if the SMTP server took it.

    Never raises: an alert that cannot be sent is reported on one log line and must not fail the task."""
    try:
        to = recipients(kind)
        if not to:
            # said once per process (per `airloop run`, per task in a deployment); the flag lives on the
            # logger because Airflow's plugin manager may execute this file a second time as a new module
            if not getattr(log, "airloop_unconfigured_said", False):
                log.warning("airloop alerts are not emailed: set the Variable %s", RECIPIENTS_VARIABLE)
                log.airloop_unconfigured_said = True  # type: ignore[attr-defined]
            return False
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        content = f"<pre>{html.escape(body)}</pre>"
        if link:
            content += f'<p>Log: <a href="{html.escape(link)}">{html.escape(link)}</a></p>'
        from airflow.sdk import BaseHook

        sender = BaseHook.get_connection(SMTP_CONN_ID).extra_dejson.get("from_email") or DEFAULT_FROM
        notifier = SmtpNotifier(
            to=to, from_email=sender, subject=f"[airloop] {subject}", html_content=content, smtp_conn_id=SMTP_CONN_ID
        )
        notifier.notify(context or {})
    except Exception as exc:  # the alert is secondary: say why it was not sent, keep the run's own outcome
        log.warning("airloop alert (%s) not emailed: %s: %s", kind, type(exc).__name__, exc)
        return False
    print(f"Alert email sent ({kind}) to {', '.join(to)}: {subject}")
    return True


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def log_url(dag_id: str, run_id: str, task_id: str, try_number: int | None = None) -> str:
    """The task's log page in the Airflow UI (``[api] base_url``)."""
    from urllib.parse import quote

    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")
    url = f"{base}/dags/{dag_id}/runs/{quote(run_id)}/tasks/{task_id}"
    return f"{url}?try_number={try_number}" if try_number else url


def describe_error(error: Any) -> tuple[str, bool]:
    """The error in plain words, and whether it is a quarantined batch (its message lists the failed
    expectations)."""
    if error is None:
        return "no exception was recorded: see the task log", False
    if isinstance(error, BaseException):
        from airloop.quarantine import BatchQuarantined

        cause = error.__cause__
        if isinstance(cause, BatchQuarantined) or isinstance(error, BatchQuarantined):
            return str(cause or error), True
        from airflow.sdk.exceptions import AirflowFailException

        if isinstance(error, AirflowFailException):
            return str(error), False
        return f"{type(error).__name__}: {error}", False
    return str(error), False  # a message without an exception (the DAG-level safety net)


def failure_email(
    dag_id: str, task_id: str, ds: str, run_id: str, error: Any, try_number: int | None = None
) -> tuple[str, str, str, str]:
    """(kind, subject, body, log link) of a task failure."""
    text, quarantined = describe_error(error)
    kind = "quarantine" if quarantined else "failure"
    what = f"batch {ds} quarantined" if quarantined else "FAILED"
    subject = f"{dag_id}.{task_id} {what} ({ds})" if quarantined else f"{dag_id}.{task_id} failed for {ds}"
    link = log_url(dag_id, run_id, task_id, try_number)
    body = (
        f"DAG: {dag_id}\nTask: {task_id}\nDate: {ds}\nRun: {run_id}\n\n"
        f"What went wrong:\n{text}\n\n"
        + ("Fix the batch and release it (airloop_release DAG or `airloop release`).\n" if quarantined else "")
        + f"Task log: {link}\n"
    )
    return kind, subject, body, link


def notify_failure(context: dict) -> None:
    """``on_failure_callback`` of a task: one email per final failure."""
    ti = context["ti"]
    _mark_alerted(ti.dag_id, ti.run_id, ti.task_id)
    ds = context.get("ds") or _ds_of(context.get("dag_run"))
    kind, subject, body, link = failure_email(
        ti.dag_id, ti.task_id, ds, ti.run_id, context.get("exception"), getattr(ti, "try_number", None)
    )
    send_event(kind, subject, body, link, context)


def notify_dag_failure(context: dict) -> None:
    """``on_failure_callback`` of a DAG (run by the DAG processor when a run fails): emails about the
    failed task when its own callback never ran, i.e. its process was killed by the OS (OOM killer,
    ``kill -9``; apache/airflow#18077, #40550)."""
    ti = context.get("ti")
    if ti is None or _alerted(ti.dag_id, ti.run_id, ti.task_id):
        return
    ds = context.get("ds") or _ds_of(context.get("dag_run"))
    error = (
        "the task's process ended without running its failure handling: it was most likely killed by the OS "
        f"(out of memory?) or by a signal. Airflow's reason: {context.get('reason') or 'unknown'}"
    )
    kind, subject, body, link = failure_email(ti.dag_id, ti.task_id, ds, ti.run_id, error, _get(ti, "try_number"))
    send_event(kind, subject, body, link, context)


def _ds_of(dag_run: Any) -> str:
    when = _get(dag_run, "logical_date") or _get(dag_run, "run_after")
    return when.strftime("%Y-%m-%d") if when else "?"


def _marker(dag_id: str, run_id: str, task_id: str) -> Path:
    from airloop.config import get_settings

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{run_id}.{task_id}")
    return get_settings().home / "alerts" / dag_id / safe


def _mark_alerted(dag_id: str, run_id: str, task_id: str) -> None:
    """Record that the task's own callback handled its failure (the DAG-level safety net then stays quiet)."""
    path = _marker(dag_id, run_id, task_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def _alerted(dag_id: str, run_id: str, task_id: str) -> bool:
    return _marker(dag_id, run_id, task_id).exists()


def notify_retrain(context: dict) -> None:
    """``on_success_callback`` of the monitor's ``trigger_retrain``: what started a retrain (cold start,
    drift, performance), from the request the monitor handed to ``airloop_train``."""
    from airloop.policy import describe_causes

    ti = context["ti"]
    request = ti.xcom_pull(task_ids="request_retrain") or {}
    result = ti.xcom_pull(task_ids="check") or {}
    ds = context.get("ds") or request.get("trigger_ds")
    why = describe_causes(request.get("causes") or [])
    share = result.get("drift_share")
    body = (
        f"Monitor run for {ds}: {why} triggered a retraining run of airloop_train (run id retrain__{ds}).\n"
        f"Reason: {request.get('reason', '?')}\n"
        + (f"Share of drifted columns: {share:.2f}\n" if isinstance(share, int | float) else "")
        + "The promotion gate decides whether the new model replaces the champion.\n"
    )
    link = log_url(ti.dag_id, ti.run_id, "check")
    send_event("retrain", f"{why} triggered a retrain ({ds})", body, link, context)


def withdrawn_subject(model: str, decision: dict) -> str:
    """What a withdrawn canary means, in one line: which version, against which champion, and that the
    champion stays."""
    version, champion = decision["version"], decision.get("champion_version")
    subject = f"{model} canary version {version} withdrawn"
    if decision.get("challenger_value") is not None and decision.get("champion_value") is not None:
        subject += (
            f": {decision['metric']} {decision['challenger_value']:.3f} on its entities vs "
            f"{decision['champion_value']:.3f} for the champion's"
        )
    return subject + (f"; version {champion} stays champion" if champion else "")


def announce_promotion(decision: dict, run_id: str | None = None) -> None:
    """Email what a gate, canary or approval decision means for people: ``promotion`` recipients when the
    champion moved, a canary started or was withdrawn, or a person's answer (or no answer in time) kept the
    champion; ``approval`` recipients when a promotion
    waits for them (with the link to its Required Actions page in ``airloop_train`` run ``run_id``)."""
    from airloop.config import get_settings
    from airloop.promote import explain_decision

    model, version, outcome = get_settings().registered_model, decision["version"], decision["decision"]
    if outcome in ("promoted", "forced"):
        subject = f"{model} version {version} is the new champion ({outcome})"
        send_event("promotion", subject, explain_decision(decision))
    elif outcome == "canary":
        fraction = get_settings().canary_fraction
        subject = f"{model} version {version} is the canary on {fraction:.0%} of the entities"
        send_event("promotion", subject, explain_decision(decision))
    elif outcome == "withdrawn":  # the canary lost on its own entities
        send_event("promotion", withdrawn_subject(model, decision), explain_decision(decision))
    elif decision.get("approval"):  # answered (or timed out)
        send_event(
            "promotion", f"{model} version {version} was not promoted: {decision['reason']}", explain_decision(decision)
        )
    elif outcome == "awaiting_approval" and run_id:
        link = log_url("airloop_train", run_id, "approval") + "/required_actions"
        send_event("approval", f"{model} version {version} awaits your approval", explain_decision(decision), link)
