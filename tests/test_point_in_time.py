"""Point-in-time correctness of the training set: no value from the future, TTL honoured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from airloop import lake
from airloop.features import apply_repo, training_frame
from airloop.storage import write_parquet

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _feature_row(customer: int, when: datetime, tenure: int) -> dict:
    return {
        "customer_id": customer,
        "event_timestamp": when,
        "tenure_months": tenure,  # the marker: which snapshot was joined
        "monthly_charges": 50.0,
        "usage_hours_7d": 10.0,
        "support_calls_30d": 1,
        "payment_failures_90d": 0,
        "plan": "basic",
        "region": "north",
        "snapshots_30d": 1.0,
        "usage_mean_7d": 10.0,
        "usage_mean_30d": 10.0,
        "support_calls_max_30d": 1.0,
    }


def test_training_rows_never_see_the_future_and_respect_the_ttl(settings, monkeypatch):
    monkeypatch.setenv("AIRLOOP_FEATURE_TTL_DAYS", "5")
    from airloop.config import get_settings

    s = get_settings()
    rows = [
        _feature_row(1, T0, 1),
        _feature_row(1, T0 + timedelta(days=2), 2),
        _feature_row(1, T0 + timedelta(days=9), 3),  # stamped after most labels below
        _feature_row(2, T0 + timedelta(days=1), 20),
    ]
    frame = pd.DataFrame(rows)
    for day, part in frame.groupby(frame["event_timestamp"].dt.date):
        write_parquet(part, lake.data_file(s, "features", day))
    apply_repo(s)

    labels = pd.DataFrame(
        [
            (1, T0 - timedelta(hours=1), 0, None),  # before any snapshot: nothing to join
            (1, T0 + timedelta(days=1), 0, 1),
            (1, T0 + timedelta(days=2), 1, 2),  # exactly at a snapshot: that snapshot counts
            (1, T0 + timedelta(days=6, hours=23), 0, 2),  # day 9's snapshot is in its future; day 2's is in the TTL
            (1, T0 + timedelta(days=8, hours=23), 0, None),  # day 2's snapshot is now 6.96 days old: outside
            (1, T0 + timedelta(days=10), 1, 3),
            (2, T0 + timedelta(days=5), 0, 20),  # 4 days old: inside the 5-day TTL
            (2, T0 + timedelta(days=7), 1, None),  # 6 days old: outside the TTL
        ],
        columns=["customer_id", "event_timestamp", "churned", "expected"],
    )
    got = training_frame(s, labels.drop(columns="expected"))
    # every label row with a snapshot inside the TTL comes back, exactly once, with that snapshot's values;
    # a row with no such snapshot is left out (there is nothing to train it on)
    keys = ["customer_id", "event_timestamp", "churned"]
    joinable = labels.dropna(subset=["expected"])
    merged = joinable.merge(got, on=keys, how="left", validate="one_to_one", indicator=True)
    assert (merged["_merge"] == "both").all(), f"label rows lost: {merged.loc[merged['_merge'] != 'both', keys]}"
    assert merged["tenure_months"].tolist() == merged["expected"].tolist(), "a leaked, stale or wrong snapshot"
    left_out = labels[labels["expected"].isna()].merge(got, on=keys)
    assert left_out.empty, f"rows with no snapshot in the past {s.feature_ttl_days} days got features: {left_out}"
    assert len(got) == len(joinable)


def test_windowed_aggregates_use_only_the_past_and_backfills_keep_the_latest_online(settings):
    from datetime import date

    from airloop.features import compute_aggregates, materialize_features, online_features
    from airloop.ingest import ingest_batch
    from airloop.simulate import simulate
    from airloop.validate import validate_batch

    days = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    simulate(date(2026, 1, 1), 4, settings)
    for d in days:
        ingest_batch(settings, d)
        validate_batch(settings, d)
    batches = {d: pd.read_parquet(lake.data_file(settings, "validated", d)) for d in days}
    day3 = compute_aggregates(settings, "2026-01-03")
    assert len(day3) == len(batches["2026-01-03"])
    for _, row in day3.sample(40, random_state=1).iterrows():
        history = pd.concat(
            [b[b["customer_id"] == row["customer_id"]] for d, b in batches.items() if d <= "2026-01-03"]
        )
        assert row["snapshots_30d"] == len(history)  # day 4 exists, but is in the future
        assert row["usage_mean_30d"] == pytest.approx(history["usage_hours_7d"].mean())
        assert row["support_calls_max_30d"] == history["support_calls_30d"].max()

    for d in days:  # in order, then a backfill of the first day
        materialize_features(settings, d)
    before = online_features(settings, batches["2026-01-04"]["customer_id"].tolist())
    materialize_features(settings, "2026-01-01")
    after = online_features(settings, batches["2026-01-04"]["customer_id"].tolist())
    pd.testing.assert_frame_equal(before, after)  # day 1 did not overwrite the newer day-4 values
