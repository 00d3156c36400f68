"""Promote: the gate that gives a challenger the ``champion`` alias only if it earned it; rollback.

The gate scores challenger and champion on the same evaluation rows (the challenger's frozen
holdout plus the labelled validated days after its training window) and applies the configured
rules (``Settings.gate_rules``; the rules themselves are the table in ``airloop.gate``).

The very first model needs no comparison. A champion is never replaced without the
``non_inferiority`` rule configured; a backfill never promotes.
"""

from __future__ import annotations

import getpass
import json
import pickle
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from airloop import gate, lake
from airloop.config import Settings
from airloop.labels import join_labels, training_labels
from airloop.model import TAG_GATE_DECISION, TAG_GATE_REASON, metric_value, predict, predicted_class, train_window
from airloop.model_card import md_table
from airloop.registry import (
    CANARY,
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    artifact_link,
    client,
    decision_artifact,
    gate_evidence,
    load_holdout,
    load_model,
    ui_url,
    version_by_alias,
)


def paired_bootstrap(
    name: str, y: np.ndarray, new: np.ndarray, old: np.ndarray, resamples: int, confidence: float, seed: int
) -> dict[str, float]:
    """Confidence interval of metric(new) − metric(old), resampling the same rows for both models."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        d = metric_value(name, y[idx], new[idx]) - metric_value(name, y[idx], old[idx])
        if not np.isnan(d):
            diffs.append(d)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    point = metric_value(name, y, new) - metric_value(name, y, old)
    return {"difference": point, "ci_low": float(low), "ci_high": float(high), "resamples": len(diffs)}


def unpaired_bootstrap(
    name: str,
    new: tuple[np.ndarray, np.ndarray],
    old: tuple[np.ndarray, np.ndarray],
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, float]:
    """Confidence interval of metric(new) − metric(old) when the two models scored different rows (a canary
    and the champion on their own entities): each group's ``(y, pred)`` is resampled on its own."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        i, j = rng.integers(0, len(new[0]), len(new[0])), rng.integers(0, len(old[0]), len(old[0]))
        d = metric_value(name, new[0][i], new[1][i]) - metric_value(name, old[0][j], old[1][j])
        if not np.isnan(d):
            diffs.append(d)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    point = metric_value(name, *new) - metric_value(name, *old)
    return {"difference": point, "ci_low": float(low), "ci_high": float(high), "resamples": len(diffs)}


def mcnemar(y: np.ndarray, new: np.ndarray, old: np.ndarray) -> dict[str, float]:
    """McNemar's exact test on the rows the two classifiers get right/wrong differently."""
    from scipy.stats import binomtest

    right_new, right_old = predicted_class(new) == y, predicted_class(old) == y
    b, c = int((right_new & ~right_old).sum()), int((~right_new & right_old).sum())
    p = binomtest(b, b + c).pvalue if b + c else 1.0
    return {"only_challenger_right": b, "only_champion_right": c, "p_value": float(p)}


def evaluation_set(settings: Settings, run: Any) -> tuple[pd.DataFrame, list[str]]:
    """The challenger's frozen holdout plus the labelled validated days after its training window,
    with point-in-time features; returns the rows and the days they come from."""
    from airloop.features import training_frame
    from airloop.labels import LABEL_DAY

    spec = settings.spec
    holdout = load_holdout(settings, run.info.run_id)
    days = sorted(holdout[spec.timestamp].dt.strftime("%Y-%m-%d").unique())
    _, end = train_window(run)
    labels = training_labels(settings, [d for d in lake.dates(settings, lake.VALIDATED) if d > end])
    recent = sorted(set(labels[LABEL_DAY]))[-settings.gate_recent_days :]
    frames = [holdout]
    if recent:
        labels = labels[labels[LABEL_DAY].isin(recent)].drop(columns=LABEL_DAY)
        frames.append(training_frame(settings, labels)[holdout.columns])
        days += recent
    rows = pd.concat(frames, ignore_index=True).drop_duplicates([spec.entity, spec.timestamp], keep="last")
    return rows.reset_index(drop=True), days


def _latency_ms(settings: Settings, model: Any, X: pd.DataFrame, calls: int = 30) -> dict[str, float]:
    predict(settings, model, X.iloc[[0]])  # warm-up
    times = []
    for i in range(min(calls, len(X))):
        t0 = time.perf_counter()
        predict(settings, model, X.iloc[[i]])
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": float(np.median(times)), "p95_ms": float(np.quantile(times, 0.95))}


def _training_validation(settings: Settings, run: Any) -> dict[str, Any]:
    """Validation status of every validated day in the challenger's training window."""
    status = {}
    for d in lake.dates(settings, lake.VALIDATED, *train_window(run)):
        path = lake.partition(settings, lake.VALIDATED, d) / lake.VALIDATION_FILE
        status[d] = "pass" if path.exists() and json.loads(path.read_text()).get("success") else "fail"
    return status


def shadow_comparison(settings: Settings, version: str) -> dict[str, Any] | None:
    """Live evidence from shadow scoring: the challenger's stored shadow predictions and the
    champion's stored predictions for the same entities and days, against their labels."""
    spec = settings.spec
    days = sorted(
        set(lake.dates(settings, lake.SHADOW))
        & set(lake.dates(settings, lake.PREDICTIONS))
        & set(lake.dates(settings, lake.VALIDATED))
    )
    labels = training_labels(settings, days)  # from the feed or the batch, as training reads them
    frames = []
    for d in days:
        shadow = pd.read_parquet(lake.data_file(settings, lake.SHADOW, d))
        shadow = shadow[shadow["model_version"] == version]
        if shadow.empty:
            continue
        live = pd.read_parquet(lake.data_file(settings, lake.PREDICTIONS, d))
        both = shadow.merge(live, on=[spec.entity, spec.timestamp], suffixes=("_challenger", "_champion"))
        frames.append(join_labels(settings, both, labels))
    if not frames:
        return None
    rows = pd.concat(frames, ignore_index=True)
    y, name = rows[spec.label].to_numpy(), settings.metric
    return {
        "days": sorted(rows["ds_challenger"].unique().tolist()),
        "rows": len(rows),
        "champion_versions": sorted(rows["model_version_champion"].unique().tolist()),
        "challenger": metric_value(name, y, rows["score_challenger"].to_numpy()),
        "champion": metric_value(name, y, rows["score_champion"].to_numpy()),
    }


_AWAITING = "passed the gate, awaiting approval: "


def evaluate_gate(
    settings: Settings,
    version: str,
    is_backfill: bool = False,
    force_reason: str | None = None,
    actor: str | None = None,
    approval: bool = False,
) -> dict[str, Any]:
    """Judge challenger ``version`` against the champion on the same rows, record the decision and
    its evidence on the version (tags + ``gate/`` artifacts), and move the aliases if it passes.
    ``force_reason`` promotes even when rules fail (recorded as ``forced``); never for a backfill.
    ``approval``: a pass is recorded as ``awaiting_approval`` and nothing moves until
    :func:`answer_approval` (a forced promotion needs none: it carries its own who and why)."""
    spec, metric, rules = settings.spec, settings.metric, settings.gate_rules
    if force_reason is not None and not force_reason.strip():
        raise ValueError("a forced promotion needs a reason (who asked and why)")
    actor = actor or getpass.getuser()
    c = client(settings)
    mv = c.get_model_version(settings.registered_model, version)
    run = c.get_run(mv.run_id)
    rows, days = evaluation_set(settings, run)
    X, y = rows[spec.model_features], rows[spec.label].to_numpy()
    model = load_model(settings, version)
    new = predict(settings, model, X)
    champ = version_by_alias(settings, CHAMPION)
    if champ is not None and str(champ.version) == version:  # re-judging the champion itself
        champ = None
    old = predict(settings, load_model(settings, champ.version), X) if champ is not None else None

    value = metric_value(metric, y, new)
    champion_value = metric_value(metric, y, old) if old is not None else None
    comparison = None
    if old is not None and len(rows) >= 2:
        comparison = paired_bootstrap(
            metric, y, new, old, settings.gate_bootstrap, settings.gate_confidence, settings.seed
        )
        if metric == "accuracy":
            comparison["mcnemar"] = mcnemar(y, new, old)
    slice_table = []
    for s in spec.slices:
        mask = rows[s.column].isin(s.values).to_numpy()
        floor = s.floor if s.floor is not None else settings.floor
        entry = {"slice": s.name, "rows": int(mask.sum()), "floor": floor, "challenger": None, "champion": None}
        if mask.sum():
            entry["challenger"] = metric_value(metric, y[mask], new[mask])
            entry["champion"] = metric_value(metric, y[mask], old[mask]) if old is not None else None
        v = entry["challenger"]
        entry["passed"] = bool(mask.sum() >= settings.gate_min_slice_rows and v is not None and v >= floor)
        slice_table.append(entry)
    measured = {
        "metric": metric,
        "challenger_value": value,
        "evaluation_rows": len(rows),
        "comparison": comparison,
        "slices": slice_table,
        "model_size_mb": len(pickle.dumps(model)) / 1e6,
        "latency": _latency_ms(settings, model, X),
        "training_validation": _training_validation(settings, run),
    }
    checks = gate.check_all(settings, measured)
    failed = [ch["rule"] for ch in checks if ch["enforced"] and not ch["passed"]]
    if is_backfill:
        decision, reason = "refused", "backfill runs never promote"
    elif champ is not None and "non_inferiority" not in rules and force_reason is None:
        decision, reason = "refused", "no comparison rule configured: a champion is only replaced under non_inferiority"
    elif failed and force_reason is None:
        decision = "refused"
        reason = "; ".join(f"{ch['rule']} failed: {ch['detail']}" for ch in checks if ch["rule"] in failed)
    elif force_reason is not None:
        decision = "forced"
        reason = f"forced by {actor}: {force_reason.strip()}"
        reason += f" (rules failing: {', '.join(failed)})" if failed else " (all rules passed)"
    elif champ is None:
        decision, reason = "promoted", f"first model: {metric} {value:.4f} passes the floor {settings.floor:.4f}"
    else:
        decision = "promoted"
        reason = f"{metric} {value:.4f} vs champion {champion_value:.4f}: " + next(
            ch["detail"] for ch in checks if ch["rule"] == "non_inferiority"
        )
    if decision == gate.PROMOTED and approval:
        decision, reason = gate.AWAITING_APPROVAL, f"{_AWAITING}{reason}"
    elif decision == gate.PROMOTED and _canary_first(settings, champ):
        decision, reason = gate.CANARY, f"{_canary_words(settings)}: {reason}"
    evidence = {
        **measured,
        "version": version,
        "decision": decision,
        "reason": reason,
        "failed_rules": failed,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "decided_by": actor,
        "backfill": is_backfill,
        "rules": rules,
        "evaluation_days": days,
        "champion_version": str(champ.version) if champ is not None else None,
        "champion_value": champion_value,
        "checks": checks,
        "shadow": shadow_comparison(settings, version),
        "settings": {
            "floor": settings.floor,
            "tolerance": settings.promotion_tolerance,
            "confidence": settings.gate_confidence,
            "bootstrap": settings.gate_bootstrap,
            "min_rows": settings.gate_min_rows,
            "min_slice_rows": settings.gate_min_slice_rows,
        },
    }
    _record(settings, c, mv, evidence)
    if decision in (gate.PROMOTED, gate.FORCED):
        _move_champion(settings, c, version, str(champ.version) if champ is not None else None)
    elif decision == gate.CANARY:
        _start_canary(settings, c, version)
    if decision in (gate.PROMOTED, gate.FORCED, gate.AWAITING_APPROVAL, gate.CANARY):  # the approver reads it
        from airloop.model_card import write_model_card

        evidence["model_card"] = write_model_card(settings, version, evidence)
    return evidence


def answer_approval(
    settings: Settings, version: str, approved: bool, by: str | None, reason: str = ""
) -> dict[str, Any]:
    """Record a person's answer to a promotion awaiting approval (``by`` None: nobody answered in time)
    and, when approved, move the aliases. The decision, who, when and why go on the version (tags,
    ``gate/`` artifact, model card). An approval is refused when the champion changed since the gate
    judged (the evidence compared another model): run the gate again."""
    c = client(settings)
    mv = c.get_model_version(settings.registered_model, version)
    if mv.tags.get(TAG_GATE_DECISION) != gate.AWAITING_APPROVAL:
        raise ValueError(
            f"version {version} is not awaiting approval (its gate decision: {mv.tags.get(TAG_GATE_DECISION)})"
        )
    evidence = gate_evidence(settings, mv.run_id, version)
    champ = version_by_alias(settings, CHAMPION)
    champion_now = str(champ.version) if champ is not None else None
    now = datetime.now(UTC).isoformat(timespec="seconds")
    reason = reason.strip()
    if by is None:
        approved, decision = False, gate.REJECTED
        why = f"timed out: no answer within {settings.approval_timeout_hours:g} h"
    elif approved and champion_now != evidence["champion_version"]:
        approved, decision = False, gate.REFUSED
        why = (
            f"approved by {by}, but the champion changed since the gate judged (v{evidence['champion_version']} "
            f"then, v{champion_now} now): run the gate again"
        )
    elif approved:
        decision = gate.CANARY if _canary_first(settings, champ) else gate.PROMOTED
        why = f"approved by {by}" + (f" ({reason})" if reason else "")
        why += f"; {_canary_words(settings)}" if decision == gate.CANARY else ""
    else:
        decision, why = gate.REJECTED, f"rejected by {by}: {reason or 'no reason given'}"
    approval = {"approved": approved, "by": by, "at": now, "reason": reason, "answer": why}
    evidence.update(
        decision=decision,
        reason=f"{why}; gate: {evidence['reason'].removeprefix(_AWAITING)}",
        approval=approval,
    )
    for k, v in {"by": by or "", "at": now, "reason": reason, "answer": why}.items():
        c.set_model_version_tag(settings.registered_model, version, f"airloop.approval.{k}", v)
    _record(settings, c, mv, evidence)
    if decision == gate.CANARY:
        _start_canary(settings, c, version)
    elif approved:
        _move_champion(settings, c, version, champion_now)
    from airloop.model_card import write_model_card

    evidence["model_card"] = write_model_card(settings, version, evidence)
    return evidence


def explain_decision(evidence: dict[str, Any]) -> str:
    """The gate's decision in plain words, one line per rule."""
    lines = [f"Version {evidence['version']}: {evidence['decision'].upper()} — {evidence['reason']}"]
    lines.append(f"  evaluated on {evidence['evaluation_rows']} rows from {', '.join(evidence['evaluation_days'])}")
    for ch in evidence["checks"]:
        mark = "PASS" if ch["passed"] else "FAIL"
        lines.append(f"  {mark} {ch['rule']}{'' if ch['enforced'] else ' (not enforced)'}: {ch['detail']}")
    for s in evidence["slices"]:
        champ = f", champion {s['champion']:.4f}" if s["champion"] is not None else ""
        value = f"{s['challenger']:.4f}" if s["challenger"] is not None else "n/a"
        lines.append(f"    slice {s['slice']}: {value}{champ} on {s['rows']} rows (floor {s['floor']})")
    if evidence.get("shadow"):
        sh = evidence["shadow"]
        lines.append(
            f"  live shadow comparison on {sh['rows']} rows: challenger {sh['challenger']:.4f}, "
            f"champion {sh['champion']:.4f}"
        )
    return "\n".join(lines)


def _record(settings: Settings, c: Any, mv: Any, evidence: dict[str, Any]) -> None:
    version, metric = evidence["version"], evidence["metric"]
    tags = {
        TAG_GATE_DECISION: evidence["decision"],
        TAG_GATE_REASON: evidence["reason"][:4900],
        "airloop.gate.failed_rules": ",".join(evidence["failed_rules"]),
        "airloop.gate.decided_by": evidence["decided_by"],
        "airloop.gate.decided_at": evidence["decided_at"],
        "airloop.gate.evaluation_rows": str(evidence["evaluation_rows"]),
        f"airloop.gate.challenger_{metric}": f"{evidence['challenger_value']:.6f}",
        "airloop.gate.champion_version": str(evidence["champion_version"]),
    }
    if evidence["champion_value"] is not None:
        tags[f"airloop.gate.champion_{metric}"] = f"{evidence['champion_value']:.6f}"
    if evidence["comparison"]:
        tags["airloop.gate.ci_low"] = f"{evidence['comparison']['ci_low']:.6f}"
        tags["airloop.gate.ci_high"] = f"{evidence['comparison']['ci_high']:.6f}"
    for k, v in tags.items():
        c.set_model_version_tag(settings.registered_model, version, k, v)
    c.log_dict(mv.run_id, evidence, decision_artifact(version))
    c.log_text(mv.run_id, explain_decision(evidence), decision_artifact(version, "txt"))


def _canary_first(settings: Settings, champ: Any) -> bool:
    """A passing challenger goes live on a share of the entities first (there is a champion to share with)."""
    return settings.canary_fraction > 0 and champ is not None


def _canary_words(settings: Settings) -> str:
    return f"canary on {settings.canary_fraction:.0%} of the entities, judged after {settings.canary_days} days"


def _start_canary(settings: Settings, c: Any, version: str) -> None:
    c.set_registered_model_alias(settings.registered_model, CANARY, version)
    c.set_model_version_tag(settings.registered_model, version, "airloop.canary.since", datetime.now(UTC).isoformat())
    challenger = version_by_alias(settings, CHALLENGER)
    if challenger is not None and str(challenger.version) == version:
        c.delete_registered_model_alias(settings.registered_model, CHALLENGER)


def _move_champion(settings: Settings, c: Any, new: str, old: str | None) -> None:
    # each alias update is one registry write: a reader sees the old or the new champion, never none
    if old is not None and old != new:
        c.set_registered_model_alias(settings.registered_model, PREVIOUS, old)
    c.set_registered_model_alias(settings.registered_model, CHAMPION, new)
    challenger = version_by_alias(settings, CHALLENGER)
    if challenger is not None and str(challenger.version) == new:
        c.delete_registered_model_alias(settings.registered_model, CHALLENGER)


def rollback(settings: Settings, reason: str, to_version: str | None = None, actor: str | None = None) -> dict:
    """Give ``champion`` back to ``previous_champion`` (or to ``to_version``); the replaced champion
    becomes ``previous_champion``. Who and why are recorded as tags on both versions. A live canary is
    withdrawn first (it would be judged against another champion than the one it was gated against),
    recorded like a gate decision (``withdrawn``); the record names it as ``canary_withdrawn``."""
    if not reason or not reason.strip():
        raise ValueError("a rollback needs a reason")
    actor = actor or getpass.getuser()
    c = client(settings)
    current = version_by_alias(settings, CHAMPION)
    if to_version is None:
        previous = version_by_alias(settings, PREVIOUS)
        if previous is None:
            raise ValueError(f"no '{PREVIOUS}' version of {settings.registered_model} to roll back to; name a version")
        to_version = str(previous.version)
    to_version = str(to_version)
    from mlflow.exceptions import MlflowException

    try:
        target = c.get_model_version(settings.registered_model, to_version)
    except MlflowException as exc:
        raise ValueError(f"{settings.registered_model} has no version {to_version}") from exc
    if current is not None and str(current.version) == to_version:
        raise ValueError(f"version {to_version} already is the champion")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    old = str(current.version) if current is not None else None
    record = {"to_version": to_version, "from_version": old, "reason": reason.strip(), "by": actor, "at": now}
    for k in ("from_version", "reason", "by", "at"):
        c.set_model_version_tag(settings.registered_model, to_version, f"airloop.rollback.{k}", str(record[k]))
    if old is not None:
        c.set_model_version_tag(settings.registered_model, old, "airloop.rolled_back", f"{now} by {actor}: {reason}")
    canary = version_by_alias(settings, CANARY)
    if canary is not None and str(canary.version) == to_version:  # the canary itself is made champion
        c.delete_registered_model_alias(settings.registered_model, CANARY)
    elif canary is not None:
        record["canary_withdrawn"] = str(canary.version)
        why = f"withdrawn by the rollback of the champion to v{to_version} ({actor}: {reason.strip()})"
        _withdraw_canary(settings, c, canary, why, actor)
    c.log_dict(target.run_id, record, f"gate/rollback_{now.replace(':', '')}.json")
    _move_champion(settings, c, to_version, old)
    return record


def _withdraw_canary(settings: Settings, c: Any, mv: Any, reason: str, actor: str) -> None:
    """Remove the ``canary`` alias from ``mv`` and record why on the version, as a gate decision."""
    from mlflow.exceptions import MlflowException

    version = str(mv.version)
    try:
        evidence = gate_evidence(settings, mv.run_id, version)
    except (MlflowException, OSError):  # a canary set by hand on a version the gate never judged
        evidence = None
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if evidence is not None:
        evidence.update(decision=gate.WITHDRAWN, reason=reason, failed_rules=[], decided_at=now, decided_by=actor)
        _record(settings, c, mv, evidence)
    else:
        tags = {TAG_GATE_DECISION: gate.WITHDRAWN, TAG_GATE_REASON: reason, "airloop.gate.decided_by": actor}
        for key, value in tags.items():
            c.set_model_version_tag(settings.registered_model, version, key, value)
    c.delete_registered_model_alias(settings.registered_model, CANARY)


def approval_request(settings: Settings, evidence: dict[str, Any]) -> tuple[str, str]:
    """Subject and Markdown body of the request a person answers: where an approval sends the version (the
    champion, or the canary when ``AIRLOOP_CANARY_FRACTION`` > 0 and there is a champion, as
    :func:`answer_approval` does), the gate's decision in words, the CI of the primary metric, both models' key
    metrics, the slice table and a link to the model card (its MLflow UI page on a tracking server)."""
    version, metric = evidence["version"], evidence["metric"]
    champion = evidence["champion_version"]
    canary = settings.canary_fraction > 0 and champion is not None
    if canary:
        subject = (
            f"Start {settings.registered_model} version {version} as the canary on "
            f"{settings.canary_fraction:.0%} of the entities?"
        )
        approve = (
            f"**Approve** gives this version the `canary` alias: it scores {settings.canary_fraction:.0%} of the "
            f"entities and after {settings.canary_days} labelled days the monitor promotes it to champion or "
            f"withdraws it; the champion (v{champion}) keeps the rest. **Reject** (give a reason) leaves it out."
        )
    else:
        subject = f"Promote {settings.registered_model} version {version} to champion?"
        approve = (
            "**Approve** moves the `champion` alias to this version; **Reject** (give a reason) leaves the champion."
        )
    fmt = "{:.4f}".format
    models = pd.DataFrame(
        [
            [metric, fmt(evidence["challenger_value"]),
             "(no champion)" if evidence["champion_value"] is None else fmt(evidence["champion_value"])],
            ["evaluation rows", evidence["evaluation_rows"], "same rows"],
            ["model size (MB)", f"{evidence['model_size_mb']:.2f}", ""],
            ["single-row latency, median (ms)", f"{evidence['latency']['median_ms']:.1f}", ""],
        ],
        columns=["", "challenger", "champion"],
    )  # fmt: skip
    comparison = evidence.get("comparison")
    ci = (
        f"Difference challenger − champion in {metric}: {comparison['difference']:+.4f}, "
        f"{settings.gate_confidence:.0%} CI [{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}] "
        f"(paired bootstrap, {settings.gate_bootstrap} resamples); "
        f"non-inferiority margin −{settings.promotion_tolerance}."
        if comparison
        else "No champion to compare with: the first model is judged on the floor and the other rules."
    )
    slices = pd.DataFrame(
        [
            [sl["slice"], sl["rows"], *("n/a" if sl[k] is None else fmt(sl[k]) for k in ("challenger", "champion")),
             sl["floor"], "pass" if sl["passed"] else "FAIL"]
            for sl in evidence["slices"]
        ],
        columns=["slice", "rows", "challenger", "champion", "floor", ""],
    )  # fmt: skip
    card = artifact_link(settings, evidence["model_card"]) if evidence.get("model_card") else "not written"
    body = "\n".join(
        [
            f"**The gate passed version {version}** (champion now: "
            f"{'v' + champion if champion else 'none'}): {evidence['reason'].removeprefix(_AWAITING)}",
            "",
            ci,
            "",
            md_table(models),
            "",
            *([md_table(slices), ""] if len(slices) else []),
            "Rules: "
            + "; ".join(f"{'PASS' if c['passed'] else 'FAIL'} {c['rule']}: {c['detail']}" for c in evidence["checks"]),
            "",
            f"Model card: {card} (MLflow: {ui_url(settings, version)}).",
            "",
            approve,
        ]
    )
    return subject, body


def end_canary(settings: Settings, evidence: dict[str, Any]) -> dict[str, Any]:
    """Close the canary judged in ``evidence`` (``airloop.canary.judge``): ``promoted`` → it becomes the
    champion (the champion becomes ``previous_champion``); ``withdrawn`` → the ``canary`` alias is removed
    and the champion stays. Recorded like a gate decision: tags, ``gate/`` artifacts, the model card."""
    c = client(settings)
    version, decision = evidence["version"], evidence["decision"]
    mv = c.get_model_version(settings.registered_model, version)
    canary = version_by_alias(settings, CANARY)
    if canary is None or str(canary.version) != version:
        raise ValueError(f"version {version} is not the canary")
    evidence = {**evidence, "decided_at": datetime.now(UTC).isoformat(timespec="seconds"), "decided_by": "monitor"}
    _record(settings, c, mv, evidence)
    c.delete_registered_model_alias(settings.registered_model, CANARY)
    if decision == gate.PROMOTED:
        _move_champion(settings, c, version, evidence["champion_version"])
        from airloop.model_card import write_model_card

        evidence["model_card"] = write_model_card(settings, version, evidence)
    return evidence
