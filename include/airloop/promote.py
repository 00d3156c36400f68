"""Promote: the gate that gives a challenger the ``champion`` alias only if it earned it."""

from __future__ import annotations

from typing import Any

from airloop.config import Settings
from airloop.registry import CHALLENGER, CHAMPION, PREVIOUS, client, load_model, version_by_alias
from airloop.train import load_holdout, metrics, predict


def decide(settings: Settings, challenger: float, champion: float | None, is_backfill: bool) -> tuple[bool, str]:
    """Apply the configured rule to metric values; return (promote?, reason in plain words)."""
    name, floor = settings.metric, settings.floor
    if is_backfill:
        return False, "backfill runs never promote"
    if challenger < floor:
        return False, f"{name} {challenger:.4f} is below the floor {floor:.4f}"
    if champion is None:
        return True, f"first model: {name} {challenger:.4f} passes the floor {floor:.4f}"
    needed = champion - settings.promotion_tolerance
    if challenger >= needed:
        return (
            True,
            f"{name} {challenger:.4f} >= champion {champion:.4f} - tolerance {settings.promotion_tolerance}",
        )
    return (
        False,
        f"{name} {challenger:.4f} < champion {champion:.4f} - tolerance {settings.promotion_tolerance}",
    )


def evaluate_gate(settings: Settings, version: str, is_backfill: bool = False) -> dict[str, Any]:
    """Score challenger ``version`` and the current champion on the challenger's held-out rows
    (the same data for both), decide, record the decision on the version, and move the aliases."""
    spec = settings.spec
    c = client(settings)
    mv = c.get_model_version(settings.model_name, version)
    holdout = load_holdout(settings, mv.run_id)
    X, y = holdout[spec.model_features], holdout[spec.label].to_numpy()
    metric = settings.metric
    challenger_metrics = metrics(settings, y, predict(settings, load_model(settings, version), X))
    champ = version_by_alias(settings, CHAMPION)
    champion_metrics = None
    if champ is not None and str(champ.version) != version:
        champion_metrics = metrics(settings, y, predict(settings, load_model(settings, champ.version), X))
    promote, reason = decide(
        settings,
        challenger_metrics[metric],
        champion_metrics[metric] if champion_metrics else None,
        is_backfill,
    )
    decision = {
        "version": version,
        "decision": "promoted" if promote else "refused",
        "reason": reason,
        "metric": metric,
        "evaluation_rows": len(holdout),
        "challenger": challenger_metrics,
        "champion_version": str(champ.version) if champ is not None else None,
        "champion": champion_metrics,
        "floor": settings.floor,
        "tolerance": settings.promotion_tolerance,
    }
    tags = {
        "airloop.gate.decision": decision["decision"],
        "airloop.gate.reason": reason,
        f"airloop.gate.challenger_{metric}": f"{challenger_metrics[metric]:.6f}",
        "airloop.gate.champion_version": str(decision["champion_version"]),
    }
    if champion_metrics:
        tags[f"airloop.gate.champion_{metric}"] = f"{champion_metrics[metric]:.6f}"
    for k, v in tags.items():
        c.set_model_version_tag(settings.model_name, version, k, v)
    c.log_dict(mv.run_id, decision, f"gate/decision_v{version}.json")
    if promote:
        # each alias update is one registry write: readers see the old or the new champion, never none
        if champ is not None and str(champ.version) != version:
            c.set_registered_model_alias(settings.model_name, PREVIOUS, str(champ.version))
        c.set_registered_model_alias(settings.model_name, CHAMPION, version)
        c.delete_registered_model_alias(settings.model_name, CHALLENGER)
    return decision
