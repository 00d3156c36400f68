"""The gate's statistics on known arrays, and the gate/rollback/lineage on real MLflow models."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from airloop import lake
from airloop.model import metric_value
from airloop.promote import mcnemar, paired_bootstrap

pytestmark = pytest.mark.filterwarnings("ignore")


def _scores(n: int, signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1, n))))


def test_bootstrap_ci_separates_a_clearly_better_model_and_covers_equal_ones():
    y, strong = _scores(1500, 1.5, 1)
    _, weak = _scores(1500, 0.2, 2)
    weak = np.where(y == 1, weak, weak)  # same labels, little signal
    better = paired_bootstrap("roc_auc", y, strong, weak, 300, 0.95, 0)
    assert better["ci_low"] > 0.1 and better["difference"] > better["ci_low"]
    same = paired_bootstrap("roc_auc", y, strong, strong, 300, 0.95, 0)
    assert same["ci_low"] == same["ci_high"] == same["difference"] == 0.0


def test_metric_is_undefined_on_one_class_and_the_gate_refuses_lower_is_better_metrics(monkeypatch):
    from airloop.config import get_settings

    assert np.isnan(metric_value("roc_auc", np.ones(10), np.linspace(0, 1, 10)))
    with pytest.raises(ValueError, match="unknown metric 'vibes'"):
        metric_value("vibes", np.ones(3), np.ones(3))
    monkeypatch.setenv("AIRLOOP_PRIMARY_METRIC", "log_loss")
    with pytest.raises(ValueError, match="AIRLOOP_PRIMARY_METRIC='log_loss' is not a higher-is-better metric"):
        get_settings()


def test_mcnemar_counts_discordant_rows():
    y = np.array([1, 1, 0, 0, 1, 0])
    out = mcnemar(y, np.array([0.9, 0.8, 0.2, 0.1, 0.2, 0.9]), np.array([0.1, 0.8, 0.2, 0.1, 0.2, 0.1]))
    assert (out["only_challenger_right"], out["only_champion_right"]) == (1, 1) and out["p_value"] == 1.0


def test_unknown_gate_rule_is_rejected(monkeypatch, tmp_path):
    from airloop.config import get_settings

    monkeypatch.setenv("AIRLOOP_GATE_RULES", '["floor", "vibes"]')
    with pytest.raises(ValueError, match=r"AIRLOOP_GATE_RULES names unknown rules \['vibes'\]"):
        get_settings()


def test_the_model_card_link_is_its_mlflow_ui_page_on_a_tracking_server(tmp_path):
    """A person opens the approval request's link: on a tracking server the MLflow UI page of the artifact (the
    UI previews HTML), on a file store (no UI address) the runs:/ URI stays."""
    from airloop.config import Settings
    from airloop.registry import artifact_link, artifact_ui_url

    server = Settings(home=tmp_path, mlflow_tracking_uri="https://mlflow.example:5000/")
    assert artifact_ui_url(server, "7", "abc", "model_card/model_card.html") == (
        "https://mlflow.example:5000/#/experiments/7/runs/abc/artifactPath/model_card/model_card.html"
    )
    local = Settings(home=tmp_path)
    assert artifact_ui_url(local, "7", "abc", "model_card/model_card.html") is None
    assert artifact_link(local, "runs:/abc/model_card/model_card.html") == "runs:/abc/model_card/model_card.html"


# --- the gate on real models -------------------------------------------------------------------

START, DAYS = date(2026, 1, 1), 10
DAY = [(START + timedelta(days=i)).isoformat() for i in range(DAYS)]


@pytest.fixture(scope="module")
def ten_days(tmp_path_factory):
    """Ten simulated days ingested, validated and materialized; MLflow on a fresh SQLite file."""
    from airloop.config import get_settings
    from airloop.features import materialize_features
    from airloop.ingest import ingest_batch
    from airloop.simulate import simulate
    from airloop.validate import validate_batch

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(tmp_path_factory.mktemp("gate") / "airloop"))
        mp.setenv("AIRLOOP_GATE_BOOTSTRAP", "300")
        s = get_settings()
        simulate(START, DAYS, s)
        for ds in DAY:
            ingest_batch(s, ds)
            validate_batch(s, ds)
            materialize_features(s, ds)
        yield s, mp


def _shuffle_labels(s, days: list[str], seed: int = 0) -> None:
    """Degrade on purpose: shuffle the labels of validated days (the raw copy keeps the truth)."""
    from airloop.storage import write_parquet

    for i, ds in enumerate(days):
        path = lake.data_file(s, "validated", ds)
        df = pd.read_parquet(path)
        df[s.spec.label] = np.random.default_rng(seed + i).permutation(df[s.spec.label].to_numpy())
        write_parquet(df, path)


def _restore_labels(s, days: list[str]) -> None:
    from airloop.storage import write_parquet

    for ds in days:
        write_parquet(pd.read_parquet(lake.data_file(s, "raw", ds)), lake.data_file(s, "validated", ds))


def _aliases(s) -> dict[str, str | None]:
    from airloop.registry import CHALLENGER, CHAMPION, PREVIOUS, version_by_alias

    return {a: (str(v.version) if (v := version_by_alias(s, a)) else None) for a in (CHAMPION, CHALLENGER, PREVIOUS)}


@pytest.fixture(scope="module")
def models(ten_days):
    """v1: trained on shuffled labels (refused by the floor, then force-promoted);
    v2: trained on clean labels, judged under several configurations;
    v3: trained on shuffled labels again, against the clean champion."""
    from airloop.promote import evaluate_gate
    from airloop.train import train_model

    s, mp = ten_days
    out = {}
    _shuffle_labels(s, DAY[:3])
    first = {"trigger": "bootstrap", "causes": ["bootstrap"], "reason": "no champion yet", "ds": DAY[5]}
    v1 = train_model(s, DAY[5], trigger=first)["version"]  # train days 1-3 (shuffled), validation 4, holdout 5-6
    _restore_labels(s, DAY[:3])
    out["v1_gate"] = evaluate_gate(s, v1)
    # the monitor does not ask for a first model again every day: back-off (cool-down 1 day, doubled once)
    mp.setenv("AIRLOOP_RETRAIN_COOLDOWN_DAYS", "1")
    from airloop.config import get_settings
    from airloop.monitor import run_checks

    out["checks_after_refusal"] = [run_checks(get_settings(), d) for d in DAY[6:8]]
    mp.delenv("AIRLOOP_RETRAIN_COOLDOWN_DAYS")
    with pytest.raises(ValueError, match="needs a reason"):
        evaluate_gate(s, v1, force_reason="  ")
    out["v1_forced"] = evaluate_gate(s, v1, force_reason="bootstrap the registry for the gate test", actor="tester")
    out["after_v1"] = _aliases(s)

    v2 = train_model(s, DAY[7])["version"]
    mp.setenv("AIRLOOP_GATE_MIN_ROWS", "100000")
    from airloop.config import get_settings

    out["v2_small"] = evaluate_gate(get_settings(), v2)
    mp.delenv("AIRLOOP_GATE_MIN_ROWS")
    spec = s.home / "strict_spec.yaml"
    text = s.spec_path.read_text().replace(
        "{name: plan_premium, column: plan, values: [premium]}",
        "{name: plan_premium, column: plan, values: [premium], floor: 0.99}",
    )
    spec.write_text(text)
    mp.setenv("AIRLOOP_SPEC_PATH", str(spec))
    out["v2_slice"] = evaluate_gate(get_settings(), v2)
    mp.delenv("AIRLOOP_SPEC_PATH")
    out["v2_backfill"] = evaluate_gate(s, v2, is_backfill=True)
    # two rules that fail together, each on its own evidence: a size budget no model meets, and a training
    # day whose recorded validation did not pass (written before a suite change, or by hand)
    mp.setenv("AIRLOOP_GATE_MAX_MODEL_MB", "0.001")
    mp.setenv("AIRLOOP_GATE_BOOTSTRAP", "50")  # these decisions do not depend on the interval
    verdict = lake.partition(s, "validated", DAY[2]) / lake.VALIDATION_FILE
    recorded = verdict.read_bytes()
    verdict.write_text(json.dumps({**json.loads(recorded), "success": False}))
    out["v2_budget_validation"] = evaluate_gate(get_settings(), v2)
    verdict.write_bytes(recorded)
    mp.delenv("AIRLOOP_GATE_MAX_MODEL_MB")
    mp.setenv("AIRLOOP_GATE_RULES", '["floor", "min_rows"]')  # no comparison rule: a champion stays
    out["v2_no_comparison"] = evaluate_gate(get_settings(), v2)
    mp.delenv("AIRLOOP_GATE_RULES")
    mp.setenv("AIRLOOP_GATE_BOOTSTRAP", "300")
    out["after_refusals"] = _aliases(s)
    out["v2_gate"] = evaluate_gate(s, v2)
    out["after_v2"] = _aliases(s)

    _shuffle_labels(s, DAY[:8], seed=10)
    v3 = train_model(s, DAY[9])["version"]  # train days 1-7 + validation day 8 shuffled, holdout 9-10 clean
    _restore_labels(s, DAY[:8])
    out["v3_gate"] = evaluate_gate(s, v3)
    out["after_v3"] = _aliases(s)
    out["versions"] = (v1, v2, v3)
    return s, out


def test_first_model_below_the_floor_is_refused_and_can_only_be_forced_with_a_reason(models):
    s, out = models
    v1, _, _ = out["versions"]
    assert out["v1_gate"]["decision"] == "refused" and "floor" in out["v1_gate"]["failed_rules"]
    assert "roc_auc" in out["v1_gate"]["reason"] and "floor 0.6000" in out["v1_gate"]["reason"]
    forced = out["v1_forced"]
    assert forced["decision"] == "forced" and "forced by tester: bootstrap the registry" in forced["reason"]
    assert out["after_v1"]["champion"] == v1
    from airloop.registry import client

    tags = client(s).get_model_version(s.registered_model, v1).tags
    assert tags["airloop.gate.decision"] == "forced" and tags["airloop.gate.decided_by"] == "tester"


def test_a_refused_first_model_is_asked_for_again_after_a_back_off_not_every_day(models):
    _, out = models
    held, asked = out["checks_after_refusal"]
    assert held["action"] == "wait" and held["causes"] == []
    assert f"refused the last 1 first model(s), the latest on {DAY[5]}" in held["reason"]
    assert f"trying again on {DAY[7]} (2-day back-off)" in held["reason"] and "floor" in held["reason"]
    assert asked["action"] == "bootstrap" and asked["causes"] == ["bootstrap"]


def test_gate_refuses_on_too_few_rows_a_failing_slice_and_backfill_then_promotes_the_better_model(models):
    s, out = models
    v1, v2, _ = out["versions"]
    small, sliced, backfill, gate = out["v2_small"], out["v2_slice"], out["v2_backfill"], out["v2_gate"]
    assert small["decision"] == "refused" and small["failed_rules"] == ["min_rows"]
    assert "vs minimum 100000" in small["reason"]
    # the overall metric improves clearly, but one slice misses its floor
    assert sliced["comparison"]["ci_low"] > 0.05
    assert sliced["decision"] == "refused" and sliced["failed_rules"] == ["slices"]
    assert "plan_premium" in sliced["reason"] and "floor 0.9900" in sliced["reason"]
    assert backfill["decision"] == "refused" and "backfill" in backfill["reason"]
    refused = out["v2_budget_validation"]
    assert refused["decision"] == "refused" and refused["failed_rules"] == ["budget", "validation"]
    assert "budget failed: size" in refused["reason"] and "(budget 0.001)" in refused["reason"]
    assert refused["model_size_mb"] > 0.001
    assert f"validation failed: training days without a passing validation: ['{DAY[2]}']" in refused["reason"]
    # every rule configured passes, but without non_inferiority nothing may replace a champion
    kept = out["v2_no_comparison"]
    assert kept["decision"] == "refused" and kept["failed_rules"] == [] and kept["rules"] == ["floor", "min_rows"]
    assert "only replaced under non_inferiority" in kept["reason"]
    assert out["after_refusals"]["champion"] == v1
    # same rows for both models: the frozen holdout plus the labelled days after the window
    assert gate["evaluation_days"] == DAY[6:]
    assert gate["decision"] == "promoted" and gate["failed_rules"] == [] and gate["champion_version"] == v1
    assert gate["challenger_value"] > gate["champion_value"] + 0.1
    assert out["after_v2"] == {"champion": v2, "challenger": None, "previous_champion": v1}
    assert {r["slice"] for r in gate["slices"]} == {"plan_basic", "plan_standard", "plan_premium"}


def test_worse_challenger_is_refused_and_stays_challenger(models):
    s, out = models
    _, v2, v3 = out["versions"]
    gate = out["v3_gate"]
    assert gate["decision"] == "refused" and "non_inferiority" in gate["failed_rules"]
    assert gate["comparison"]["ci_high"] < 0 and gate["champion_version"] == v2
    assert out["after_v3"] == {"champion": v2, "challenger": v3, "previous_champion": out["versions"][0]}


def test_decision_evidence_and_model_card_are_recorded_on_the_version(models):
    import mlflow.artifacts

    from airloop.registry import client, gate_evidence

    s, out = models
    _, v2, _ = out["versions"]
    c = client(s)
    mv = c.get_model_version(s.registered_model, v2)
    assert mv.tags["airloop.gate.decision"] == "promoted"
    assert float(mv.tags["airloop.gate.ci_low"]) > 0 and mv.tags["airloop.model_card"].endswith("model_card.html")
    evidence = gate_evidence(s, mv.run_id, v2)
    assert evidence["decision"] == "promoted" and {ch["rule"] for ch in evidence["checks"]} == {
        "floor",
        "min_rows",
        "non_inferiority",
        "slices",
        "budget",
        "validation",
    }
    card = open(mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="model_card/model_card.md")).read()
    for heading in ("Intended use", "Training data", "Evaluation and promotion gate", "Slices", "Drift baseline"):
        assert f"## {heading}" in card
    assert "retention team" in card and "plan_premium" in card and "paired bootstrap" in card
    html = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="model_card/model_card.html")
    assert "<table" in open(html).read()


def test_shadow_scoring_rollback_and_lineage(models, monkeypatch):
    from airloop.config import get_settings
    from airloop.promote import rollback, shadow_comparison
    from airloop.score import score_batch
    from airloop.storage import file_sha256
    from airloop_tools.cli import main

    s, out = models
    v1, v2, v3 = out["versions"]
    monkeypatch.setenv("AIRLOOP_SHADOW_SCORING", "true")
    scored = score_batch(get_settings(), DAY[9])
    assert scored["model_version"] == v2 and scored["shadow"]["model_version"] == v3
    shadow = pd.read_parquet(lake.data_file(s, "predictions_shadow", DAY[9]))
    live = pd.read_parquet(lake.data_file(s, "predictions", DAY[9]))
    assert set(shadow["model_version"]) == {v3} and set(live["model_version"]) == {v2}
    assert len(shadow) == len(live)
    live_cmp = shadow_comparison(s, v3)
    assert live_cmp["rows"] == len(live) and live_cmp["champion"] > live_cmp["challenger"]
    # the gate reports this live comparison in its evidence (returned and recorded on the version's run)
    from airloop.promote import evaluate_gate
    from airloop.registry import client, gate_evidence

    judged = evaluate_gate(get_settings(), v3)
    assert judged["decision"] == "refused" and judged["shadow"] == live_cmp and live_cmp["days"] == [DAY[9]]
    assert live_cmp["champion_versions"] == [v2]
    recorded = gate_evidence(s, client(s).get_model_version(s.registered_model, v3).run_id, v3)
    assert recorded["shadow"] == live_cmp and _aliases(s) == {"champion": v2, "challenger": v3, "previous_champion": v1}

    # lineage of a real prediction row, through the CLI a user would run
    entity = int(live.iloc[0][s.spec.entity])
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["lineage", "--date", DAY[9], "--entity", str(entity), "--json"]) == 0
    chain = json.loads(buf.getvalue())
    assert chain["model_version"]["version"] == v2 and "champion" in chain["model_version"]["aliases"]
    assert chain["training_window"] == {"start": DAY[0], "end": DAY[7], "days": DAY[:8]}
    assert chain["feature_service"] == "subscription_churn_v1"
    raw = lake.data_file(s, "raw", DAY[0])
    assert chain["training_data"][0]["raw"] == str(raw) and chain["training_data"][0]["raw_sha256"] == file_sha256(raw)
    assert all(d["raw_intact"] for d in chain["training_data"])
    assert chain["scored_batch"]["raw_sha256"] == file_sha256(lake.data_file(s, "raw", DAY[9]))
    assert list(chain["scored_batch"]["landing_sources"].values())[0] == file_sha256(
        next((lake.landing(s, DAY[9])).glob("*"))
    )

    # rollback restores the previous champion, and the next scoring run uses it
    with pytest.raises(ValueError, match="needs a reason"):
        rollback(s, " ")
    record = rollback(s, "v2 misbehaves in production", actor="oncall")
    assert (record["to_version"], record["from_version"]) == (v1, v2)
    assert _aliases(s)["champion"] == v1 and _aliases(s)["previous_champion"] == v2
    assert score_batch(s, DAY[9])["model_version"] == v1
    assert set(pd.read_parquet(lake.data_file(s, "predictions", DAY[9]))["model_version"]) == {v1}
    from airloop.registry import client

    tags = client(s).get_model_version(s.registered_model, v1).tags
    assert tags["airloop.rollback.by"] == "oncall" and tags["airloop.rollback.reason"] == "v2 misbehaves in production"
    # the CLI rolls forward again (a rollback of the rollback)
    assert main(["rollback", "--reason", "fixed upstream", "--json"]) == 0
    assert _aliases(s)["champion"] == v2


def test_the_cli_gate_exits_by_decision_and_lineage_flags_a_tampered_raw_file(models):
    """Runs last in this module: it moves the champion alias."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from airloop.lineage import trace_prediction

    s, out = models
    _, v2, v3 = out["versions"]
    airloop = str(Path(sys.executable).with_name("airloop"))

    def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([airloop, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})

    refused = cli("promote", "--version", v3, "--json")
    assert refused.returncode == 1 and json.loads(refused.stdout)["decision"] == "refused", refused.stderr[-2000:]
    no_reason = cli("promote", "--version", v3, "--force")
    assert no_reason.returncode == 2 and "--force needs --reason" in no_reason.stderr
    forced = cli("promote", "--version", v3, "--force", "--reason", "cli test")
    assert forced.returncode == 0 and _aliases(s)["champion"] == v3, forced.stderr[-2000:]
    # with approval required, a pass (v2 beats v3) is only recorded: approvals happen in Airflow
    waiting = cli("promote", "--version", v2, "--json", env={"AIRLOOP_PROMOTION_APPROVAL": "required"})
    assert waiting.returncode == 1, waiting.stderr[-2000:]
    evidence = json.loads(waiting.stdout)
    assert evidence["decision"] == "awaiting_approval" and evidence["failed_rules"] == []
    assert evidence["reason"].startswith("passed the gate, awaiting approval: ") and _aliases(s)["champion"] == v3

    # lineage re-hashes the raw files a model was trained on: an edited one is reported as not matching
    entity = pd.read_parquet(lake.data_file(s, "predictions", DAY[9]))[s.spec.entity].iloc[0]
    raw = lake.data_file(s, "raw", DAY[0])
    original = raw.read_bytes()
    try:
        raw.write_bytes(original + b"tampered")
        chain = trace_prediction(s, DAY[9], entity)
        intact = {d["ds"]: d["raw_intact"] for d in chain["training_data"]}
        assert intact[DAY[0]] is False and all(ok for ds, ok in intact.items() if ds != DAY[0])
    finally:
        raw.write_bytes(original)


def test_a_promotion_awaiting_approval_moves_nothing_until_a_person_approves(models):
    """AIRLOOP_PROMOTION_APPROVAL=required, the part without Airflow (the DAG and the Required Actions page
    are tested live in test_approval.py): a pass waits; reject, no answer and a stale approval keep the
    champion; an approval moves it and names who approved."""
    import mlflow.artifacts

    from airloop.policy import refused_in_a_row
    from airloop.promote import answer_approval, approval_request, evaluate_gate, rollback
    from airloop.registry import client

    s, out = models
    v1, v2, v3 = out["versions"]
    assert _aliases(s)["champion"] == v3  # forced by the CLI test above; v2 is the better model

    def judged() -> dict:
        before = _aliases(s)["champion"]
        evidence = evaluate_gate(s, v2, approval=True, actor="airflow:test")
        assert evidence["decision"] == "awaiting_approval" and _aliases(s)["champion"] == before
        return evidence

    evidence = judged()
    subject, body = approval_request(s, evidence)
    assert subject == f"Promote {s.registered_model} version {v2} to champion?"
    assert "95% CI [" in body and "| plan_premium |" in body and f"/#/models/{s.registered_model}/versions/{v2}" in body
    run_id = client(s).get_model_version(s.registered_model, v2).run_id
    assert f"Model card: runs:/{run_id}/model_card/model_card.html" in body  # SQLite store: no UI page to link
    assert "**Approve** moves the `champion` alias to this version" in body  # no canary configured
    assert client(s).get_model_version(s.registered_model, v2).tags["airloop.model_card"].endswith(".html")

    rejected = answer_approval(s, v2, approved=False, by="carol", reason="wait for the quarter close")
    assert rejected["decision"] == "rejected" and _aliases(s)["champion"] == v3
    tags = client(s).get_model_version(s.registered_model, v2).tags
    assert tags["airloop.gate.decision"] == "rejected" and tags["airloop.approval.by"] == "carol"
    assert tags["airloop.gate.reason"].startswith("rejected by carol: wait for the quarter close")
    with pytest.raises(ValueError, match="not awaiting approval"):
        answer_approval(s, v2, approved=True, by="carol")
    assert refused_in_a_row([{"trigger": "retrain", "gate": "rejected"}]) == 1  # the back-off counts it

    judged()
    timed_out = answer_approval(s, v2, approved=True, by=None)
    assert timed_out["decision"] == "rejected" and timed_out["reason"].startswith("timed out: no answer within 24 h")
    assert _aliases(s)["champion"] == v3

    judged()
    rollback(s, "the champion changes while the request waits", to_version=v1, actor="oncall")
    stale = answer_approval(s, v2, approved=True, by="alice")
    assert stale["decision"] == "refused" and "champion changed since the gate judged" in stale["reason"]
    assert _aliases(s)["champion"] == v1

    judged()
    approved = answer_approval(s, v2, approved=True, by="alice", reason="looks good")
    assert approved["decision"] == "promoted" and _aliases(s)["champion"] == v2
    mv = client(s).get_model_version(s.registered_model, v2)
    assert mv.tags["airloop.gate.decision"] == "promoted" and mv.tags["airloop.approval.by"] == "alice"
    card = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="model_card/model_card.md")
    assert "Approval: approved by alice (looks good)" in open(card).read()
