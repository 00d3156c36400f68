"""Promote: the gate that gives a challenger the ``champion`` alias only if it earned it; rollback.

The gate scores challenger and champion on the same evaluation rows (the challenger's frozen
holdout plus the labelled validated days after its training window) and applies the configured
rules (``Settings.gate_rules``):

* ``floor`` — the primary metric is at least the absolute floor;
* ``min_rows`` — enough evaluation rows to judge at all (too few: refuse, don't guess);
* ``non_inferiority`` — the lower bound of a paired-bootstrap confidence interval of
  (challenger − champion) is at least −``promotion_tolerance``;
* ``slices`` — every slice named in the dataset spec has enough rows and meets its floor;
* ``budget`` — model size and median single-row latency within budget;
* ``validation`` — every day the challenger trained on passed data validation.

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

from airloop.config import Settings
from airloop.registry import CHALLENGER, CHAMPION, PREVIOUS, client, load_model, version_by_alias
from airloop.storage import DATA_FILE, partition_dates, read_partitions

HIGHER_IS_BETTER = ("roc_auc", "average_precision", "accuracy", "r2")


def metric_value(name: str, y: np.ndarray, pred: np.ndarray) -> float:
    """One gate metric (higher is better); NaN when it is undefined on these rows (e.g. one class)."""
    from sklearn.metrics import accuracy_score, average_precision_score, r2_score, roc_auc_score

    if name not in HIGHER_IS_BETTER:
        raise ValueError(f"the gate's primary metric must be one of {HIGHER_IS_BETTER}, got {name!r}")
    if name in ("roc_auc", "average_precision") and len(np.unique(y)) < 2:
        return float("nan")
    if name == "r2" and len(y) < 2:
        return float("nan")
    fn = {"roc_auc": roc_auc_score, "average_precision": average_precision_score, "r2": r2_score}.get(name)
    return float(fn(y, pred) if fn else accuracy_score(y, pred >= 0.5))


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


def mcnemar(y: np.ndarray, new: np.ndarray, old: np.ndarray) -> dict[str, float]:
    """McNemar's exact test on the rows the two classifiers get right/wrong differently."""
    from scipy.stats import binomtest

    right_new, right_old = (new >= 0.5) == y, (old >= 0.5) == y
    b, c = int((right_new & ~right_old).sum()), int((~right_new & right_old).sum())
    p = binomtest(b, b + c).pvalue if b + c else 1.0
    return {"only_challenger_right": b, "only_champion_right": c, "p_value": float(p)}


def evaluation_set(settings: Settings, run: Any) -> tuple[pd.DataFrame, list[str]]:
    """The challenger's frozen holdout plus the labelled validated days after its training window,
    with point-in-time features; returns the rows and the days they come from."""
    from airloop.features import training_frame
    from airloop.train import load_holdout

    spec = settings.spec
    holdout = load_holdout(settings, run.info.run_id)
    days = sorted(holdout[spec.timestamp].dt.strftime("%Y-%m-%d").unique())
    validated = settings.lake_dir / "validated"
    recent = [d for d in partition_dates(validated) if d > run.data.params["train_end"]][-settings.gate_recent_days :]
    frames = [holdout]
    if recent:
        labels = read_partitions(validated, recent, [spec.entity, spec.timestamp, spec.label])
        labels = labels.dropna(subset=[spec.label])
        if len(labels):
            frames.append(training_frame(settings, labels)[holdout.columns])
            days += recent
    rows = pd.concat(frames, ignore_index=True).drop_duplicates([spec.entity, spec.timestamp], keep="last")
    return rows.reset_index(drop=True), days


def _latency_ms(settings: Settings, model: Any, X: pd.DataFrame, calls: int = 30) -> dict[str, float]:
    from airloop.train import predict

    predict(settings, model, X.iloc[[0]])  # warm-up
    times = []
    for i in range(min(calls, len(X))):
        t0 = time.perf_counter()
        predict(settings, model, X.iloc[[i]])
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": float(np.median(times)), "p95_ms": float(np.quantile(times, 0.95))}


def _training_validation(settings: Settings, run: Any) -> dict[str, Any]:
    """Validation status of every validated day in the challenger's training window."""
    start, end = run.data.params["train_start"], run.data.params["train_end"]
    status = {}
    for d in partition_dates(settings.lake_dir / "validated"):
        if start <= d <= end:
            path = settings.partition("validated", d) / "validation.json"
            status[d] = "pass" if path.exists() and json.loads(path.read_text()).get("success") else "fail"
    return status


def shadow_comparison(settings: Settings, version: str) -> dict[str, Any] | None:
    """Live evidence from shadow scoring: the challenger's stored shadow predictions and the
    champion's stored predictions for the same entities and days, against their labels."""
    spec = settings.spec
    shadow_dir = settings.lake_dir / "predictions_shadow"
    days = [
        d
        for d in partition_dates(shadow_dir)
        if (settings.partition("predictions", d) / DATA_FILE).exists()
        and (settings.partition("validated", d) / DATA_FILE).exists()
    ]
    frames = []
    for d in days:
        shadow = pd.read_parquet(settings.partition("predictions_shadow", d) / DATA_FILE)
        shadow = shadow[shadow["model_version"] == version]
        if shadow.empty:
            continue
        live = pd.read_parquet(settings.partition("predictions", d) / DATA_FILE)
        keys = [spec.entity, spec.timestamp]
        labels = pd.read_parquet(settings.partition("validated", d) / DATA_FILE, columns=[*keys, spec.label])
        both = shadow.merge(live, on=keys, suffixes=("_challenger", "_champion")).merge(labels, on=keys)
        frames.append(both.dropna(subset=[spec.label]))
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


def _check(rule: str, passed: bool, detail: str, enforced: list[str]) -> dict[str, Any]:
    return {"rule": rule, "passed": bool(passed), "enforced": rule in enforced, "detail": detail}


def evaluate_gate(
    settings: Settings,
    version: str,
    is_backfill: bool = False,
    force_reason: str | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Judge challenger ``version`` against the champion on the same rows, record the decision and
    its evidence on the version (tags + ``gate/`` artifacts), and move the aliases if it passes.
    ``force_reason`` promotes even when rules fail (recorded as ``forced``); never for a backfill."""
    from airloop.train import predict

    spec, metric, rules = settings.spec, settings.metric, settings.gate_rules
    if force_reason is not None and not force_reason.strip():
        raise ValueError("a forced promotion needs a reason (who asked and why)")
    actor = actor or getpass.getuser()
    c = client(settings)
    mv = c.get_model_version(settings.model_name, version)
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
    checks = [
        _check("floor", value >= settings.floor, f"{metric} {value:.4f} vs floor {settings.floor:.4f}", rules),
        _check(
            "min_rows",
            len(rows) >= settings.gate_min_rows,
            f"{len(rows)} evaluation rows vs minimum {settings.gate_min_rows}",
            rules,
        ),
    ]
    comparison = None
    if old is not None and len(rows) >= 2:
        comparison = paired_bootstrap(
            metric, y, new, old, settings.gate_bootstrap, settings.gate_confidence, settings.seed
        )
        if metric == "accuracy":
            comparison["mcnemar"] = mcnemar(y, new, old)
        checks.append(
            _check(
                "non_inferiority",
                comparison["ci_low"] >= -settings.promotion_tolerance,
                f"{metric} challenger − champion = {comparison['difference']:+.4f}, "
                f"{settings.gate_confidence:.0%} CI [{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}] "
                f"vs margin −{settings.promotion_tolerance}",
                rules,
            )
        )
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
    failing = [e for e in slice_table if not e["passed"]]
    checks.append(
        _check(
            "slices",
            not failing,
            "all slices meet their floors"
            if not failing
            else "; ".join(
                f"{e['slice']}: {metric} {e['challenger'] if e['challenger'] is not None else float('nan'):.4f} "
                f"vs floor {e['floor']:.4f} on {e['rows']} rows (minimum {settings.gate_min_slice_rows})"
                for e in failing
            ),
            rules,
        )
    )
    size_mb = len(pickle.dumps(model)) / 1e6
    latency = _latency_ms(settings, model, X)
    checks.append(
        _check(
            "budget",
            size_mb <= settings.gate_max_model_mb and latency["median_ms"] <= settings.gate_max_latency_ms,
            f"size {size_mb:.2f} MB (budget {settings.gate_max_model_mb}), single-row latency median "
            f"{latency['median_ms']:.1f} ms (budget {settings.gate_max_latency_ms})",
            rules,
        )
    )
    validation = _training_validation(settings, run)
    bad_days = [d for d, s in validation.items() if s != "pass"]
    checks.append(
        _check(
            "validation",
            bool(validation) and not bad_days,
            f"{len(validation)} training days, all passed validation"
            if not bad_days
            else f"training days without a passing validation: {bad_days}",
            rules,
        )
    )

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
    evidence = {
        "version": version,
        "decision": decision,
        "reason": reason,
        "failed_rules": failed,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "decided_by": actor,
        "backfill": is_backfill,
        "metric": metric,
        "rules": rules,
        "evaluation_rows": len(rows),
        "evaluation_days": days,
        "challenger_value": value,
        "champion_version": str(champ.version) if champ is not None else None,
        "champion_value": champion_value,
        "comparison": comparison,
        "checks": checks,
        "slices": slice_table,
        "model_size_mb": size_mb,
        "latency": latency,
        "training_validation": validation,
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
    if decision in ("promoted", "forced"):
        _move_champion(settings, c, version, str(champ.version) if champ is not None else None)
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
        "airloop.gate.decision": evidence["decision"],
        "airloop.gate.reason": evidence["reason"][:4900],
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
        c.set_model_version_tag(settings.model_name, version, k, v)
    c.log_dict(mv.run_id, evidence, f"gate/decision_v{version}.json")
    c.log_text(mv.run_id, explain_decision(evidence), f"gate/decision_v{version}.txt")


def _move_champion(settings: Settings, c: Any, new: str, old: str | None) -> None:
    # each alias update is one registry write: a reader sees the old or the new champion, never none
    if old is not None and old != new:
        c.set_registered_model_alias(settings.model_name, PREVIOUS, old)
    c.set_registered_model_alias(settings.model_name, CHAMPION, new)
    challenger = version_by_alias(settings, CHALLENGER)
    if challenger is not None and str(challenger.version) == new:
        c.delete_registered_model_alias(settings.model_name, CHALLENGER)


def rollback(settings: Settings, reason: str, to_version: str | None = None, actor: str | None = None) -> dict:
    """Give ``champion`` back to ``previous_champion`` (or to ``to_version``); the replaced champion
    becomes ``previous_champion``. Who and why are recorded as tags on both versions."""
    if not reason or not reason.strip():
        raise ValueError("a rollback needs a reason")
    actor = actor or getpass.getuser()
    c = client(settings)
    current = version_by_alias(settings, CHAMPION)
    if to_version is None:
        previous = version_by_alias(settings, PREVIOUS)
        if previous is None:
            raise ValueError(f"no '{PREVIOUS}' version of {settings.model_name} to roll back to; name a version")
        to_version = str(previous.version)
    to_version = str(to_version)
    from mlflow.exceptions import MlflowException

    try:
        target = c.get_model_version(settings.model_name, to_version)
    except MlflowException as exc:
        raise ValueError(f"{settings.model_name} has no version {to_version}") from exc
    if current is not None and str(current.version) == to_version:
        raise ValueError(f"version {to_version} already is the champion")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    old = str(current.version) if current is not None else None
    record = {"to_version": to_version, "from_version": old, "reason": reason.strip(), "by": actor, "at": now}
    for k in ("from_version", "reason", "by", "at"):
        c.set_model_version_tag(settings.model_name, to_version, f"airloop.rollback.{k}", str(record[k]))
    if old is not None:
        c.set_model_version_tag(settings.model_name, old, "airloop.rolled_back", f"{now} by {actor}: {reason}")
    c.log_dict(target.run_id, record, f"gate/rollback_{now.replace(':', '')}.json")
    _move_champion(settings, c, to_version, old)
    return record
