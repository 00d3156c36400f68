"""Policy: what the loop does about one monitoring check — retrain, alert, or nothing.

The facts come from the check (``airloop.monitor.run_checks``): Evidently's drift verdict and how many
consecutive checks it has held, the champion's metric on labelled days, the last retrain, the labelled
rows that arrived since the last training window, and training runs already in flight. The decision
holds a retrain back for persistence, the cool-down (doubled after each refused retrain in a row, up to
a bound), a young change point (the new regime needs whole weeks before a model can learn it), too few
new labels and de-duplication.

Why the policy converges: a drift episode starts at a *change point* (the first current day that
drifts on its own). The reference of a champion is the part of its training window on or after the
latest change point inside that window (at most ``drift_reference_days``), so a champion trained on the
new regime is compared with the new regime: the shift it learned is no longer reported. A refused
retrain leaves the champion, so the drift stays; the back-off keeps the same evidence from asking again
every cool-down.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Literal, TypedDict

from airloop import lake
from airloop.config import Settings
from airloop.gate import NOT_PROMOTED

# what the monitor DAG's branch does with each action
TRIGGER_ACTIONS = ("bootstrap", "retrain")
ALERT_ACTIONS = ("alert", "cooldown")
QUIET_ACTIONS = ("none", "wait")


class RetrainRequest(TypedDict):
    """What the monitor hands to ``airloop_train`` (the run's conf; each key is a Param of that DAG)."""

    trigger: Literal["bootstrap", "retrain"]  # the monitor's action
    causes: list[str]  # bootstrap, drift, performance
    reason: str  # the check's reason in words
    trigger_ds: str  # the day of the check that asked for it
    end_date: str  # the last day of the training window
    is_backfill: bool  # asked for by a backfill: the gate judges the model and never promotes it


def retrain_request(result: dict, backfill: bool = False) -> RetrainRequest:
    """The request to ``airloop_train`` for a check whose action triggers a retrain. ``backfill``: the check
    ran in a backfill whose training must not promote (the caller applies ``AIRLOOP_BACKFILL_PROMOTES``).
    The training run itself is an ordinary triggered run, so the request is what carries it."""
    if result["action"] not in TRIGGER_ACTIONS:
        raise ValueError(f"action {result['action']!r} does not trigger a retrain (only {TRIGGER_ACTIONS})")
    return {
        "trigger": result["action"],
        "causes": list(result["causes"]),
        "reason": result["reason"],
        "trigger_ds": result["ds"],
        "end_date": result["ds"],
        "is_backfill": backfill,
    }


def describe_causes(causes: list[str]) -> str:
    """The causes of a retrain in words (for emails and logs)."""
    words = {
        "bootstrap": "no champion yet (cold start)",
        "drift": "data drift",
        "performance": "performance below the floor",
    }
    return " and ".join(words.get(c, c) for c in causes) or "no recorded cause"


def history(settings: Settings, before: str | None = None) -> list[dict]:
    """Every monitoring result (``result.json``), oldest first; only days before ``before`` if given."""
    results = [json.loads(p.read_text()) for p in lake.monitoring_results(settings)]
    return [r for r in results if before is None or r["ds"] < before]


def drift_streak(past: list[dict], champion_version: str, drifted_now: bool) -> int:
    """Consecutive checks, ending now, in which Evidently found dataset drift against the same champion."""
    if not drifted_now:
        return 0
    streak = 1
    for r in reversed(past):
        if r.get("champion_version") != champion_version or not r.get("dataset_drift"):
            break
        streak += 1
    return streak


def last_retrain(ds: str, past: list[dict], runs: list[dict]) -> str | None:
    """The latest day on or before ``ds`` on which a retrain happened: a training run triggered that day
    (or, for a manual run, its last training day), or a trigger the monitor sent."""
    days = [r["trigger_ds"] or r["window"][1] for r in runs]
    days += [r["ds"] for r in past if r.get("action") in TRIGGER_ACTIONS]
    return max((d for d in days if d and d <= ds), default=None)


def reference_days(settings: Settings, window: list[str], past: list[dict]) -> tuple[list[str], str | None]:
    """The drift reference of a champion trained on the validated days ``window``: the most recent
    ``drift_reference_days`` of them on or after the latest change point inside the window (or of the
    whole window when none is inside); return the days and that change point."""
    inside = [r["change_point"] for r in past if r.get("change_point") and window and window[0] < r["change_point"]]
    inside = [cp for cp in inside if cp <= window[-1]]
    cp = max(inside, default=None)
    days = [d for d in window if cp is None or d >= cp]
    return days[-settings.drift_reference_days :], cp


def refused_in_a_row(runs: list[dict]) -> int:
    """Policy-triggered runs (bootstrap, retrain) refused by the gate (or rejected by a person) since the
    last one promoted (``runs`` oldest first, with ``gate``)."""
    k = 0
    for r in reversed(runs):
        if r.get("trigger") not in TRIGGER_ACTIONS or r.get("gate") is None:
            continue
        if r["gate"] not in NOT_PROMOTED:
            break
        k += 1
    return k


def cooldown_days(settings: Settings, refused: int) -> int:
    """The cool-down after a retrain: doubled for each refused retrain in a row, bounded."""
    return min(settings.retrain_cooldown_days * 2**refused, settings.retrain_backoff_max_days)


def cooldown_ends(settings: Settings, last: str | None, refused: int) -> str | None:
    """The first day a policy-triggered run may start again after the one on ``last`` (None: none yet)."""
    return (
        None
        if last is None
        else (date.fromisoformat(last) + timedelta(days=cooldown_days(settings, refused))).isoformat()
    )


def decide(settings: Settings, facts: dict) -> tuple[str, str, list[str]]:
    """The retraining policy on one check's facts; return (action, reason, causes).

    ``facts``: drift_share, dataset_drift, streak, performance (metric value or None), performance_days,
    last_retrain (day or None), refused_in_a_row, change_point and settled_days (validated days since
    it, that day included), new_labels, active_training (queued/running training runs), ds."""
    causes, why = [], []
    share, metric = facts.get("drift_share"), settings.metric
    need = settings.drift_persist_checks
    if facts.get("dataset_drift"):
        text = f"drift share {share:.2f} >= {settings.drift_share_threshold} in {facts['streak']} consecutive checks"
        if facts["streak"] >= need:
            causes.append("drift")
            why.append(text)
        else:
            why.append(f"{text} (a retrain needs {need})")
    elif share is not None:
        why.append(f"drift share {share:.2f} < threshold {settings.drift_share_threshold}")
    perf = facts.get("performance")
    if perf is not None:
        days = ",".join(facts.get("performance_days", []))
        if perf < settings.monitor_floor:
            causes.append("performance")
            why.append(f"{metric} {perf:.3f} on labelled days {days} < floor {settings.monitor_floor}")
        else:
            why.append(f"{metric} {perf:.3f} on labelled days {days} >= floor {settings.monitor_floor}")
    reason = "; ".join(why) or "nothing to compare yet"
    if not causes:
        return ("alert" if facts.get("dataset_drift") else "none"), reason, causes
    if facts.get("active_training"):
        return "alert", f"{reason}; a training run is already queued or running: no new trigger", causes
    refused = facts.get("refused_in_a_row", 0)
    recent, cooldown = facts.get("last_retrain"), cooldown_days(settings, refused)
    if recent is not None and facts["ds"] < cooldown_ends(settings, recent, refused):
        backoff = f" (backed off after {refused} refused retrains in a row)" if refused else ""
        return (
            "cooldown",
            f"{reason}; a retrain happened on {recent}, inside the {cooldown}-day cool-down{backoff}",
            causes,
        )
    cp, settled = facts.get("change_point"), facts.get("settled_days", 0)
    if causes == ["drift"] and cp is not None and settled < settings.drift_settle_days:
        return (
            "alert",
            f"{reason}; the new regime began on {cp}: {settled} of {settings.drift_settle_days} validated days "
            "of it so far (a retrain waits for them)",
            causes,
        )
    if facts["new_labels"] < settings.min_new_labels:
        return (
            "alert",
            f"{reason}; only {facts['new_labels']} labelled rows after the last training window "
            f"(a retrain needs {settings.min_new_labels})",
            causes,
        )
    return "retrain", f"{reason} ({facts['new_labels']} new labelled rows)", causes
