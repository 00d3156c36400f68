"""Canary batch scoring on simulated days where the answer is known: a model trained on shuffled labels as
the canary is withdrawn; a model as good as the champion that passed the gate goes live as the canary and
is promoted. The split is a stable share of the entities, the same on every day and retry, and each day's
predictions stay one partition that names the model of every row."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from airloop import lake

START = date(2026, 1, 1)
DAY = [(START + timedelta(days=i)).isoformat() for i in range(20)]
FRACTION = 0.4


def test_the_canary_share_is_stable_and_close_to_the_fraction():
    from airloop.storage import in_fraction

    ids = pd.Series(np.arange(20_000), dtype="int64")
    mask = in_fraction(ids, FRACTION)
    assert abs(mask.mean() - FRACTION) < 0.02
    shuffled = ids.sample(frac=1, random_state=1)
    assert (in_fraction(shuffled, FRACTION) == mask[shuffled.to_numpy()]).all(), "order or day never matters"
    strings = pd.Series([f"S-{i:05d}" for i in range(20_000)])
    assert abs(in_fraction(strings, FRACTION).mean() - FRACTION) < 0.02
    assert not in_fraction(ids, 0.0).any()


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """Days 1-6 make the first champion; then each day is ingested, validated, materialized, scored, its
    arrived labels collected and the canary judged, as the daily and monitor DAGs do."""
    from airloop.canary import judge
    from airloop.config import get_settings
    from airloop.features import materialize_features
    from airloop.ingest import ingest_batch
    from airloop.labels import collect_labels
    from airloop.promote import evaluate_gate
    from airloop.registry import CANARY, client
    from airloop.score import score_batch
    from airloop.simulate import simulate
    from airloop.storage import write_parquet
    from airloop.train import train_model
    from airloop.validate import validate_batch

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(tmp_path_factory.mktemp("canary") / "airloop"))
        for key, value in {
            "LABEL_SOURCE": "feed",
            "ROWS_PER_DAY": "2000",
            "CUSTOMERS": "10000",
            "GATE_BOOTSTRAP": "300",
            "GATE_MIN_ROWS": "300",
            "CANARY_FRACTION": str(FRACTION),
            "CANARY_DAYS": "3",
            "CANARY_MIN_ROWS": "1000",
            # two groups of ~2400 rows judged unpaired: a 5-point AUC margin, not the gate's paired 1 point
            "PROMOTION_TOLERANCE": "0.05",
        }.items():
            mp.setenv(f"AIRLOOP_{key}", value)
        s = get_settings()
        simulate(START, len(DAY), s)
        out: dict = {"judged": {}, "scored": {}}

        def day(ds: str) -> None:
            ingest_batch(s, ds)
            validate_batch(s, ds)
            materialize_features(s, ds)
            if out.get("champion"):
                out["scored"][ds] = score_batch(s, ds)
            collect_labels(s, ds)
            out["judged"][ds] = judge(s, ds)

        for ds in DAY[:6]:
            day(ds)
        v1 = train_model(s, DAY[5])["version"]
        out["v1_gate"] = evaluate_gate(s, v1)
        out["champion"] = v1

        # a canary set by hand (the registry API, as a person could): trained on shuffled labels (the feed's)
        kept = {p: p.read_bytes() for p in lake.zone_dir(s, lake.LABELS).glob("ds=*/*.parquet")}
        for path in kept:
            frame = pd.read_parquet(path)
            frame[s.spec.label] = np.random.default_rng(7).permutation(frame[s.spec.label].to_numpy())
            write_parquet(frame, path)
        bad = train_model(s, DAY[5])["version"]
        for path, data in kept.items():
            path.write_bytes(data)
        bad_gate = evaluate_gate(s, bad)  # refused: it stays a registered version, the canary by hand
        assert bad_gate["decision"] == "refused"
        client(s).set_registered_model_alias(s.registered_model, CANARY, bad)
        out["bad"] = bad
        for ds in DAY[6:12]:
            day(ds)
            if ds == DAY[7]:  # a retry of a canary day gives the same partition
                first = lake.data_file(s, lake.PREDICTIONS, ds).read_bytes()
                out["retry"] = (first, score_batch(s, ds), lake.data_file(s, lake.PREDICTIONS, ds).read_bytes())
            if out["judged"][ds] and out["judged"][ds]["decision"] != "collecting":
                break
        out["bad_judged_on"] = ds

        # a good challenger passes the gate and becomes the canary, then is judged on its own entities
        good = train_model(s, out["bad_judged_on"])["version"]
        out["good_gate"] = evaluate_gate(s, good)
        out["good"] = good
        for ds in DAY[DAY.index(out["bad_judged_on"]) + 1 :]:
            day(ds)
            if out["judged"][ds] and out["judged"][ds]["decision"] != "collecting":
                break
        out["good_judged_on"] = ds
        day(DAY[DAY.index(ds) + 1])
        out["after"] = out["scored"][DAY[DAY.index(ds) + 1]]
        yield s, out


def _aliases(s) -> dict[str, str | None]:
    from airloop.registry import CANARY, CHAMPION, PREVIOUS, version_by_alias

    return {a: (str(v.version) if (v := version_by_alias(s, a)) else None) for a in (CHAMPION, PREVIOUS, CANARY)}


def test_a_canary_worse_than_the_champion_is_withdrawn(loop):
    from airloop.registry import client

    s, out = loop
    judged = out["judged"][out["bad_judged_on"]]
    assert judged["decision"] == "withdrawn", judged
    assert judged["comparison"]["ci_high"] < 0 and "unpaired bootstrap" in judged["reason"]
    assert len(judged["canary"]["labelled_days"]) >= 3
    tags = client(s).get_model_version(s.registered_model, out["bad"]).tags
    assert tags["airloop.gate.decision"] == "withdrawn" and tags["airloop.gate.decided_by"] == "monitor"
    # collecting before: the first canary days said what was missing
    first = out["judged"][DAY[6]]
    assert first["decision"] == "collecting" and "labelled days" in first["reason"]


def test_each_day_is_one_partition_naming_the_model_of_every_row_and_a_retry_is_identical(loop):
    from airloop.storage import in_fraction

    s, out = loop
    before, rescored, after = out["retry"]
    assert before == after and rescored["canary"]["model_version"] == out["bad"]
    preds = [pd.read_parquet(lake.data_file(s, lake.PREDICTIONS, ds)) for ds in DAY[6:8]]
    for frame, ds in zip(preds, DAY[6:8], strict=True):
        assert len(frame) == len(pd.read_parquet(lake.data_file(s, lake.FEATURES, ds)))
        canary_rows = frame["model_version"] == out["bad"]
        assert set(frame["model_version"]) == {out["champion"], out["bad"]}
        assert (canary_rows.to_numpy() == in_fraction(frame[s.spec.entity], FRACTION)).all()
    # an entity seen on both days is scored by the same model on both
    both = preds[0].merge(preds[1], on=s.spec.entity, suffixes=("_a", "_b"))
    assert len(both) and (both["model_version_a"] == both["model_version_b"]).all()


def test_a_canary_as_good_as_the_champion_is_promoted_after_its_days(loop):
    from airloop.registry import client

    s, out = loop
    assert out["good_gate"]["decision"] == "canary", out["good_gate"]["reason"]
    judged = out["judged"][out["good_judged_on"]]
    assert judged["decision"] == "promoted", judged["reason"]
    assert judged["comparison"]["ci_low"] >= -0.05
    assert _aliases(s) == {"champion": out["good"], "previous_champion": out["champion"], "canary": None}
    mv = client(s).get_model_version(s.registered_model, out["good"])
    assert mv.tags["airloop.gate.decision"] == "promoted" and "canary" in mv.tags["airloop.gate.reason"]
    # the next day is scored by the new champion alone
    assert out["after"]["model_version"] == out["good"] and "canary" not in out["after"]


def test_aliases_moving_while_a_day_is_scored_never_give_it_two_versions(loop):
    """No canary now: another process flips ``champion`` between two versions (rollback, roll forward) as
    fast as it can while this one scores the same day again and again. Each published partition is whole
    and scored by exactly one version (plan_scoring resolves the alias once per run); both versions are seen,
    so the flips really interleaved with the scoring."""
    import os
    import subprocess
    import sys

    from airloop.score import score_batch

    s, out = loop
    ds = out["good_judged_on"]
    flipper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from airloop.config import Settings\n"
            "from airloop.promote import rollback\n"
            f"s = Settings(home={str(s.home)!r})\n"
            "for i in range(30):\n"
            f"    rollback(s, 'flip during scoring', to_version=({out['champion']!r}, {out['good']!r})[i % 2])\n",
        ],
        env={**os.environ, "AIRLOOP_HOME": str(s.home)},
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    while flipper.poll() is None:
        score_batch(s, ds)
        frame = pd.read_parquet(lake.data_file(s, lake.PREDICTIONS, ds))
        assert frame["model_version"].nunique() == 1 and len(frame) == 2000
        seen.append(frame["model_version"].iloc[0])
    assert flipper.returncode == 0, flipper.stderr.read()[-2000:]
    assert len(seen) >= 3 and set(seen) == {out["champion"], out["good"]}, seen


@pytest.fixture(scope="module")
def around_a_canary(loop):
    """After the promoted canary (champion ``good``, previous the first champion): a rollback and a roll
    forward; then, with approval required, a new challenger that passed the gate is approved (so it starts as
    the canary) and the champion is rolled back while that canary is live."""
    from airloop.promote import answer_approval, approval_request, evaluate_gate, rollback
    from airloop.registry import client
    from airloop.train import train_model

    s, out = loop
    res: dict = {"before": _aliases(s)}
    res["rolled_back"] = rollback(s, "the promoted canary misbehaves", actor="oncall")
    res["after_rollback"] = _aliases(s)
    rollback(s, "fixed upstream: roll forward", actor="oncall")
    challenger = train_model(s, DAY[DAY.index(out["good_judged_on"]) + 1])["version"]
    res["gate"] = evaluate_gate(s, challenger, approval=True, actor="airflow:test")
    res["awaiting"] = _aliases(s)
    res["request"] = approval_request(s, res["gate"])
    res["approved"] = answer_approval(s, challenger, approved=True, by="alice", reason="canary first")
    res["approved_aliases"] = _aliases(s)
    res["approved_tags"] = client(s).get_model_version(s.registered_model, challenger).tags
    res["withdrawn_by_rollback"] = rollback(s, "the champion misbehaves while a canary runs", actor="oncall")
    res["after_withdrawal"] = _aliases(s)
    res["challenger"] = challenger
    return s, out, res


def test_a_rollback_after_a_canary_was_promoted_restores_the_previous_champion(around_a_canary):
    _, out, res = around_a_canary
    assert res["before"] == {"champion": out["good"], "previous_champion": out["champion"], "canary": None}
    record = res["rolled_back"]
    assert (record["to_version"], record["from_version"]) == (out["champion"], out["good"])
    assert "canary_withdrawn" not in record
    assert res["after_rollback"] == {"champion": out["champion"], "previous_champion": out["good"], "canary": None}


def test_with_approval_required_an_approved_pass_becomes_the_canary_and_the_champion_stays(around_a_canary):
    """AIRLOOP_CANARY_FRACTION > 0 and approval required: the request says the version goes to the canary (not
    to champion), and Approve gives it the canary alias while the champion stays where it was."""
    s, out, res = around_a_canary
    v = res["challenger"]
    assert res["gate"]["decision"] == "awaiting_approval", res["gate"]["reason"]
    assert res["awaiting"] == {"champion": out["good"], "previous_champion": out["champion"], "canary": None}
    subject, body = res["request"]
    assert subject == f"Start {s.registered_model} version {v} as the canary on 40% of the entities?"
    assert "to champion" not in subject and "moves the `champion` alias" not in body
    assert "**Approve** gives this version the `canary` alias" in body and "after 3 labelled days" in body
    assert "Model card: runs:/" in body  # a file store: no MLflow UI address to link
    approved = res["approved"]
    assert approved["decision"] == "canary" and approved["approval"]["by"] == "alice"
    assert "canary on 40% of the entities" in approved["reason"]
    assert res["approved_aliases"] == {"champion": out["good"], "previous_champion": out["champion"], "canary": v}
    tags = res["approved_tags"]
    assert tags["airloop.gate.decision"] == "canary" and tags["airloop.approval.by"] == "alice"


def test_a_rollback_while_a_canary_is_live_withdraws_the_canary(around_a_canary):
    """The canary was gated against the champion the rollback replaces: it is withdrawn, recorded on the version
    like a gate decision (tags and the decision artifact), and the rollback's record names it."""
    from airloop.registry import client, gate_evidence

    s, out, res = around_a_canary
    v = res["challenger"]
    record = res["withdrawn_by_rollback"]
    assert record["canary_withdrawn"] == v and record["to_version"] == out["champion"]
    assert res["after_withdrawal"] == {"champion": out["champion"], "previous_champion": out["good"], "canary": None}
    mv = client(s).get_model_version(s.registered_model, v)
    assert mv.tags["airloop.gate.decision"] == "withdrawn" and mv.tags["airloop.gate.decided_by"] == "oncall"
    assert mv.tags["airloop.gate.reason"].startswith(f"withdrawn by the rollback of the champion to v{out['champion']}")
    evidence = gate_evidence(s, mv.run_id, v)
    assert evidence["decision"] == "withdrawn" and evidence["approval"]["by"] == "alice"  # the history stays


def test_a_withdrawn_canary_is_emailed_to_the_promotion_recipients(loop, inbox, monkeypatch):
    """The monitor's withdrawal of the bad canary, announced as the monitor DAG does, reaches a real SMTP
    server: to the promotion recipients, a subject that says which version left, why, and who stays."""
    from airloop_alerts import announce_promotion
    from live_airflow import body_text, smtp_env

    s, out = loop
    for key, value in smtp_env(inbox, {"": "all@example.com", "promotion": "ml-team@example.com"}).items():
        monkeypatch.setenv(key, value)
    judged = out["judged"][out["bad_judged_on"]]
    announce_promotion(judged)
    (msg,) = [m for m in inbox.messages if "withdrawn" in m["subject"]]
    assert msg["to"] == "ml-team@example.com"
    assert msg["subject"] == (
        f"[airloop] {s.registered_model} canary version {out['bad']} withdrawn: roc_auc "
        f"{judged['challenger_value']:.3f} on its entities vs {judged['champion_value']:.3f} for the champion's; "
        f"version {out['champion']} stays champion"
    )
    assert "WITHDRAWN" in body_text(msg) and "unpaired bootstrap" in body_text(msg)
