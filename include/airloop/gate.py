"""The promotion gate's rules: one small function per rule, in one table (``RULES``).

Each rule reads the evidence the gate measured (``airloop.promote.evaluate_gate``) and returns
whether it passes and the measured value against its threshold, in words; ``None`` when it does not
apply (``non_inferiority`` without a champion). ``AIRLOOP_GATE_RULES`` selects which are enforced;
adding a rule is one function and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airloop.config import Settings

Verdict = tuple[bool, str] | None

# the decisions recorded on a version (tag ``airloop.gate.decision``)
PROMOTED, FORCED, REFUSED = "promoted", "forced", "refused"
AWAITING_APPROVAL, REJECTED = "awaiting_approval", "rejected"  # AIRLOOP_PROMOTION_APPROVAL=required
CANARY, WITHDRAWN = "canary", "withdrawn"  # AIRLOOP_CANARY_FRACTION > 0: live on a share, then judged
NOT_PROMOTED = (REFUSED, REJECTED, WITHDRAWN)  # what the retraining policy's back-off counts
Rule = Callable[["Settings", dict[str, Any]], Verdict]


def floor(settings: Settings, ev: dict[str, Any]) -> Verdict:
    """The primary metric is at least the absolute floor."""
    value = ev["challenger_value"]
    return value >= settings.floor, f"{ev['metric']} {value:.4f} vs floor {settings.floor:.4f}"


def min_rows(settings: Settings, ev: dict[str, Any]) -> Verdict:
    """Enough evaluation rows to judge at all (too few: refuse, don't guess)."""
    rows = ev["evaluation_rows"]
    return rows >= settings.gate_min_rows, f"{rows} evaluation rows vs minimum {settings.gate_min_rows}"


def non_inferiority(settings: Settings, ev: dict[str, Any]) -> Verdict:
    """The lower bound of the paired-bootstrap CI of (challenger − champion) is at least −tolerance."""
    c = ev["comparison"]
    if c is None:
        return None
    return c["ci_low"] >= -settings.promotion_tolerance, (
        f"{ev['metric']} challenger − champion = {c['difference']:+.4f}, {settings.gate_confidence:.0%} CI "
        f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] vs margin −{settings.promotion_tolerance}"
    )


def slices(settings: Settings, ev: dict[str, Any]) -> Verdict:
    """Every slice named in the dataset spec has enough rows and meets its floor."""
    failing = [e for e in ev["slices"] if not e["passed"]]
    if not failing:
        return True, "all slices meet their floors"
    nan = float("nan")
    return False, "; ".join(
        f"{e['slice']}: {ev['metric']} {e['challenger'] if e['challenger'] is not None else nan:.4f} "
        f"vs floor {e['floor']:.4f} on {e['rows']} rows (minimum {settings.gate_min_slice_rows})"
        for e in failing
    )


def budget(settings: Settings, ev: dict[str, Any]) -> Verdict:
    """Model size and median single-row latency within budget."""
    size, latency = ev["model_size_mb"], ev["latency"]["median_ms"]
    ok = size <= settings.gate_max_model_mb and latency <= settings.gate_max_latency_ms
    return ok, (
        f"size {size:.2f} MB (budget {settings.gate_max_model_mb}), single-row latency median "
        f"{latency:.1f} ms (budget {settings.gate_max_latency_ms})"
    )


def validation(settings: Settings, ev: dict[str, Any]) -> Verdict:
    """Every day the challenger trained on passed data validation."""
    status = ev["training_validation"]
    bad = [d for d, s in status.items() if s != "pass"]
    if bad:
        return False, f"training days without a passing validation: {bad}"
    return bool(status), f"{len(status)} training days, all passed validation"


RULES: dict[str, Rule] = {
    "floor": floor,
    "min_rows": min_rows,
    "non_inferiority": non_inferiority,
    "slices": slices,
    "budget": budget,
    "validation": validation,
}


def check_all(settings: Settings, ev: dict[str, Any]) -> list[dict[str, Any]]:
    """Every applicable rule's verdict: rule, passed, whether it is enforced, and the detail."""
    checks = []
    for name, rule in RULES.items():
        verdict = rule(settings, ev)
        if verdict is not None:
            passed, detail = verdict
            checks.append(
                {"rule": name, "passed": bool(passed), "enforced": name in settings.gate_rules, "detail": detail}
            )
    return checks
