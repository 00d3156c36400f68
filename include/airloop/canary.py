"""Canary batch scoring, judged: with ``AIRLOOP_CANARY_FRACTION`` a version that passed the gate (alias
``canary``) scores a stable share of each day's entities (``storage.in_fraction`` of the entity id; the
day's predictions stay one partition and ``model_version`` says which model scored each row). Once labels
have arrived for ``AIRLOOP_CANARY_DAYS`` of its days and both groups have ``AIRLOOP_CANARY_MIN_ROWS``
labelled rows, the monitor compares canary and champion on their own entities: the groups differ, so the
CI of the difference comes from an unpaired bootstrap (the gate's is paired). Non-inferior by the gate's
margin → the canary becomes champion; worse → it is withdrawn. Both are recorded like a gate decision.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from airloop import gate, lake
from airloop.config import Settings
from airloop.labels import arrived_labels, join_labels
from airloop.model import metric_value
from airloop.promote import end_canary, unpaired_bootstrap
from airloop.registry import CANARY, CHAMPION, gate_evidence, version_by_alias

COLLECTING = "collecting"


def judge(settings: Settings, ds: str) -> dict[str, Any] | None:
    """Judge the canary on the labels arrived by ``ds``: None without a canary; ``collecting`` (with
    what is missing) until there is enough evidence; else the recorded decision (``promoted`` or
    ``withdrawn``, see :func:`airloop.promote.end_canary`)."""
    canary, champ = version_by_alias(settings, CANARY), version_by_alias(settings, CHAMPION)
    if canary is None or champ is None:
        return None
    version, champion = str(canary.version), str(champ.version)
    days = lake.dates(settings, lake.PREDICTIONS, end=ds)
    preds = lake.read(settings, lake.PREDICTIONS, days) if days else pd.DataFrame(columns=["ds", "model_version"])
    canary_days = sorted(set(preds.loc[preds["model_version"] == version, "ds"]))
    preds = preds[preds["ds"].isin(canary_days) & preds["model_version"].isin([version, champion])]
    labels = arrived_labels(settings, ds)
    joined = join_labels(settings, preds, labels) if len(labels) and len(preds) else preds.iloc[:0]
    label = settings.spec.label
    groups = {v: joined[joined["model_version"] == v] for v in (version, champion)}
    labelled_days = sorted(set(groups[version]["ds"]))
    status: dict[str, Any] = {
        "version": version,
        "champion_version": champion,
        "scored_days": canary_days,
        "labelled_days": labelled_days,
        "rows": {"canary": len(groups[version]), "champion": len(groups[champion])},
    }
    missing = []
    if len(labelled_days) < settings.canary_days:
        missing.append(f"{len(labelled_days)} of {settings.canary_days} labelled days")
    if min(status["rows"].values()) < settings.canary_min_rows:
        missing.append(f"labelled rows {status['rows']} (need {settings.canary_min_rows} each)")
    if missing:
        return {**status, "decision": COLLECTING, "reason": f"canary v{version} collecting: " + "; ".join(missing)}

    metric = settings.metric
    new = (groups[version][label].to_numpy(), groups[version]["score"].to_numpy())
    old = (groups[champion][label].to_numpy(), groups[champion]["score"].to_numpy())
    comparison = unpaired_bootstrap(metric, new, old, settings.gate_bootstrap, settings.gate_confidence, settings.seed)
    value, champion_value = metric_value(metric, *new), metric_value(metric, *old)
    ok = comparison["ci_low"] >= -settings.promotion_tolerance
    reason = (
        f"canary {metric} {value:.4f} on {len(new[0])} labelled rows of its entities vs champion "
        f"{champion_value:.4f} on {len(old[0])} rows of other entities (unpaired bootstrap): difference "
        f"{comparison['difference']:+.4f}, {settings.gate_confidence:.0%} CI [{comparison['ci_low']:+.4f}, "
        f"{comparison['ci_high']:+.4f}] {'>=' if ok else '<'} margin −{settings.promotion_tolerance} over "
        f"{len(labelled_days)} days"
    )
    evidence = gate_evidence(settings, canary.run_id, version)
    evidence.update(
        decision=gate.PROMOTED if ok else gate.WITHDRAWN,
        reason=reason,
        failed_rules=[] if ok else ["canary"],
        metric=metric,
        challenger_value=value,
        champion_value=champion_value,
        champion_version=champion,
        comparison=comparison,
        evaluation_rows=len(new[0]) + len(old[0]),
        evaluation_days=labelled_days,
        canary=status,
    )
    return end_canary(settings, evidence)
