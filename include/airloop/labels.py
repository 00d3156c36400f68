"""Labels: the label feed, as it arrives.

Outcomes are known only some days after the rows they label. They land as CSV files under
``landing/labels/`` in one folder per arrival day (``lake.label_landing``) with the columns entity, timestamp and
label of the dataset spec; each arrival day is copied into the lake's labels zone, keyed by that
arrival day, with ``label_ds`` (the day the label is about) added. Readers ask for what had arrived by
a given day, so nothing downstream sees a label before it arrived.

Training and the gate read their labels through :func:`training_labels`: from this feed by default
(``label_source=feed``: a model trained on day D learns only the outcomes known on D), or from the
daily batch's own label column (``label_source=batch``, for data whose batches arrive with final labels).
"""

from __future__ import annotations

import pandas as pd

from airloop import lake
from airloop.config import Settings
from airloop.storage import write_parquet

LABEL_DAY = "label_ds"  # the day a label is about (its timestamp's date)


def collect_labels(settings: Settings, ds: str) -> dict:
    """Copy the label files that arrived on or before ``ds`` into the labels zone (one Parquet per
    arrival day, atomic, idempotent; the day ``ds`` itself is re-read, earlier days only once)."""
    spec = settings.spec
    written = []
    for arrival in lake.label_arrivals(settings):
        if arrival > ds:
            continue
        target = lake.data_file(settings, lake.LABELS, arrival)
        files = sorted(lake.label_landing(settings, arrival).glob("*.csv"))
        if (target.exists() and arrival != ds) or not files:
            continue
        frames = []
        for f in files:
            df = pd.read_csv(f, dtype={spec.entity: str} if spec.entity_dtype == "string" else None)
            missing = [c for c in (spec.entity, spec.timestamp, spec.label) if c not in df]
            if missing:
                raise ValueError(
                    f"label file {f} lacks columns {missing}; expected {spec.entity}, {spec.timestamp}, {spec.label}"
                )
            frames.append(df[[spec.entity, spec.timestamp, spec.label]])
        labels = pd.concat(frames, ignore_index=True).drop_duplicates([spec.entity, spec.timestamp], keep="last")
        labels[spec.timestamp] = pd.to_datetime(labels[spec.timestamp], utc=True, format="ISO8601")
        labels[LABEL_DAY] = labels[spec.timestamp].dt.strftime("%Y-%m-%d")
        write_parquet(labels.reset_index(drop=True), target)
        written.append(arrival)
    return {"ds": ds, "written": written, "arrivals": lake.dates(settings, lake.LABELS, end=ds)}


def arrived_labels(settings: Settings, ds: str) -> pd.DataFrame:
    """All labels that arrived on or before ``ds``; column ``label_ds`` is the day they label."""
    spec = settings.spec
    arrivals = lake.dates(settings, lake.LABELS, end=ds)
    if not arrivals:
        return pd.DataFrame(columns=[spec.entity, spec.timestamp, spec.label, LABEL_DAY])
    return lake.read(settings, lake.LABELS, arrivals)


def training_labels(settings: Settings, days: list[str], as_of: str | None = None) -> pd.DataFrame:
    """The labels of the rows of the validated ``days`` known on ``as_of`` (default: everything
    collected): entity, timestamp, label and ``label_ds``, from the feed or the batch (``label_source``).
    A day without labels yet has no rows."""
    spec = settings.spec
    cols = [spec.entity, spec.timestamp, spec.label]
    if not days:
        return pd.DataFrame(columns=[*cols, LABEL_DAY])
    if settings.label_source == "batch":
        labels = lake.read(settings, lake.VALIDATED, days, cols).dropna(subset=[spec.label])
        labels[LABEL_DAY] = pd.to_datetime(labels[spec.timestamp], utc=True).dt.strftime("%Y-%m-%d")
        return labels.reset_index(drop=True)
    arrived = arrived_labels(settings, as_of or "9999-12-31")
    arrived = arrived[arrived[LABEL_DAY].isin(set(days))].dropna(subset=[spec.label])
    # latest arrival wins when a label is corrected; one row per entity and time
    arrived = arrived.drop_duplicates([spec.entity, spec.timestamp], keep="last")
    return arrived[[*cols, LABEL_DAY]].reset_index(drop=True)


def join_labels(settings: Settings, scored: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Predictions with their arrived labels: by entity and event time when predictions carry it,
    else by entity and day (one prediction per entity and day)."""
    spec = settings.spec
    if spec.timestamp in scored:
        left, right = scored.copy(), labels.copy()
        for frame in (left, right):
            frame[spec.timestamp] = pd.to_datetime(frame[spec.timestamp], utc=True).astype("datetime64[ns, UTC]")
        return left.merge(right.drop(columns=LABEL_DAY), on=[spec.entity, spec.timestamp], how="inner")
    latest = labels.sort_values(spec.timestamp).drop_duplicates([spec.entity, LABEL_DAY], keep="last")
    return scored.merge(latest, left_on=[spec.entity, "ds"], right_on=[spec.entity, LABEL_DAY], how="inner")
