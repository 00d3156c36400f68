"""Point-in-time correctness of the training set: no value from the future, TTL honoured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

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
        write_parquet(part, s.features_dir / f"{day}.parquet")
    apply_repo(s)

    labels = pd.DataFrame(
        [
            (1, T0 - timedelta(hours=1), 0, None),  # before any snapshot: nothing to join
            (1, T0 + timedelta(days=1), 0, 1),
            (1, T0 + timedelta(days=2), 1, 2),  # exactly at a snapshot: that snapshot counts
            (1, T0 + timedelta(days=8, hours=23), 0, 2),  # day 9's snapshot is in its future
            (1, T0 + timedelta(days=10), 1, 3),
            (2, T0 + timedelta(days=5), 0, 20),  # 4 days old: inside the 5-day TTL
            (2, T0 + timedelta(days=7), 1, None),  # 6 days old: outside the TTL
        ],
        columns=["customer_id", "event_timestamp", "churned", "expected"],
    )
    got = training_frame(s, labels.drop(columns="expected"))
    merged = labels.merge(got, on=["customer_id", "event_timestamp", "churned"], validate="one_to_one")
    for _, row in merged.iterrows():
        if row["expected"] is None or pd.isna(row["expected"]):
            assert pd.isna(row["tenure_months"]), f"leak or stale value at {row['event_timestamp']}"
        else:
            assert row["tenure_months"] == row["expected"], f"wrong snapshot at {row['event_timestamp']}"
