"""The lake's layout, in one place: zones, date partitions, and how to list and read them.

Every zone holds one folder per logical date, ``<zone>/ds=YYYY-MM-DD/``, with the day's rows in
``data.parquet`` beside its sidecar files (``validation.json``, ``_ingest.json``, ``REASON.txt``).
The features zone is the one exception: Feast's ``FileSource`` reads a folder of plain Parquet files,
so its partitions are ``features/YYYY-MM-DD.parquet`` (a ``ds=`` folder would add a hive column).
Landing, label landing, monitoring and staging folders use the same ``ds=`` naming. No other module
builds a partition path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cheap to import: DAG files read the settings, which name the zones
    import pandas as pd

    from airloop.config import Settings

# zones of the lake (settings.lake_dir / zone)
RAW = "raw"
VALIDATED = "validated"
QUARANTINE = "quarantine"
FEATURES = "features"
PREDICTIONS = "predictions"
SHADOW = "predictions_shadow"  # the challenger's scores of the same rows (shadow scoring)
LABELS = "labels"  # the label feed as it arrived, one partition per arrival day
ONLINE = "predictions_online"  # what `airloop serve` answered, one part file per flush
ZONES = (RAW, VALIDATED, QUARANTINE, FEATURES, PREDICTIONS, SHADOW, LABELS, ONLINE)

DATA_FILE = "data.parquet"
REASON_FILE = "REASON.txt"
VALIDATION_FILE = "validation.json"
INGEST_FILE = "_ingest.json"
RESULT_FILE = "result.json"  # a monitoring day's numbers and decision

# what a predictions partition holds besides the entity and timestamp columns
PREDICTION_COLUMNS = ("ds", "score", "prediction", "model_name", "model_version", "model_run_id")

PARTITION = "ds={ds}"
# S3 key templates (settings.s3_prefix / s3_output_prefix defaults)
S3_LANDING_PREFIX = f"landing/{PARTITION}/"
S3_OUTPUT_PREFIX = "{zone}/" + PARTITION + "/"


def folder(ds: str) -> str:
    """The partition folder name of a date."""
    return PARTITION.format(ds=ds)


def _dates_in(parent: Path, need: str | None = None) -> list[str]:
    """Sorted dates of the ``ds=`` folders in ``parent`` (only those holding ``need`` if given)."""
    if not parent.exists():
        return []
    prefix = folder("")
    return sorted(
        p.name[len(prefix) :] for p in parent.glob(f"{prefix}*") if p.is_dir() and (need is None or (p / need).exists())
    )


def zone_dir(settings: Settings, zone: str) -> Path:
    if zone not in ZONES:
        raise ValueError(f"unknown lake zone {zone!r}; zones: {ZONES}")
    return settings.lake_dir / zone


def partition(settings: Settings, zone: str, ds: str) -> Path:
    """The folder of one date in a zone (for the features zone: its Parquet file)."""
    if zone == FEATURES:
        return zone_dir(settings, zone) / f"{ds}.parquet"
    return zone_dir(settings, zone) / folder(ds)


def data_file(settings: Settings, zone: str, ds: str) -> Path:
    """The Parquet file with the rows of one date in a zone."""
    return partition(settings, zone, ds) if zone == FEATURES else partition(settings, zone, ds) / DATA_FILE


def dates(settings: Settings, zone: str, start: str | None = None, end: str | None = None) -> list[str]:
    """Sorted dates present in a zone, within ``[start, end]`` when given. A date is present when its
    rows are (quarantine: when its folder is, whatever it holds)."""
    if zone == FEATURES:
        folder_ = zone_dir(settings, zone)
        found = sorted(p.stem for p in folder_.glob("*.parquet")) if folder_.exists() else []
    else:
        found = _dates_in(zone_dir(settings, zone), None if zone == QUARANTINE else DATA_FILE)
    return [d for d in found if (start is None or d >= start) and (end is None or d <= end)]


def read(settings: Settings, zone: str, days: list[str], columns: list[str] | None = None) -> pd.DataFrame:
    """The rows of the given dates of a zone, concatenated (absent dates are skipped)."""
    import pandas as pd

    files = [data_file(settings, zone, d) for d in days]
    frames = [pd.read_parquet(f, columns=columns) for f in files if f.exists()]
    if not frames:
        raise FileNotFoundError(f"no partitions in {zone_dir(settings, zone)} for {days[0]}..{days[-1]}")
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------ outside the lake, same naming


def landing(settings: Settings, ds: str) -> Path:
    """Where the batch files of ``ds`` land (local source)."""
    return settings.landing_dir / folder(ds)


def landing_dates(settings: Settings) -> list[str]:
    """Dates with a landing folder (whatever it holds)."""
    return _dates_in(settings.landing_dir)


def label_landing(settings: Settings, arrival: str | None = None) -> Path:
    """Where label files land: ``landing/labels/ds=<arrival day>/`` (the folder of all of them without a day)."""
    base = settings.landing_dir / LABELS
    return base if arrival is None else base / folder(arrival)


def label_arrivals(settings: Settings) -> list[str]:
    """Arrival days with a label landing folder."""
    return _dates_in(label_landing(settings))


def monitoring(settings: Settings, ds: str) -> Path:
    """The monitor's folder of one day (reports and ``result.json``)."""
    return settings.monitoring_dir / folder(ds)


def monitoring_days(settings: Settings) -> list[str]:
    """The days with a recorded monitoring check, oldest first."""
    return _dates_in(settings.monitoring_dir, RESULT_FILE)


def monitoring_results(settings: Settings) -> list[Path]:
    """Every day's ``result.json``, oldest first."""
    return [monitoring(settings, d) / RESULT_FILE for d in _dates_in(settings.monitoring_dir, RESULT_FILE)]


def skew_report(settings: Settings, ds: str) -> Path:
    """The training/serving skew probe's report of one scoring day."""
    return settings.monitoring_dir / "skew" / f"{folder(ds)}.json"


def materialize_record(settings: Settings, ds: str) -> Path:
    """The rows and seconds of one day's materialization (``features.materialize_features`` writes it,
    ``airloop.metrics`` reads it)."""
    return settings.monitoring_dir / "materialize" / f"{folder(ds)}.json"


def staging(settings: Settings, stage: str, ds: str) -> Path:
    """Scratch folder of one stage and day (scoring parts, hash buckets); no reader lists it."""
    return settings.staging_dir / stage / folder(ds)


def s3_landing_prefix(settings: Settings, ds: str) -> str:
    return settings.s3_prefix.format(ds=ds)


def s3_output_key(settings: Settings, zone: str, ds: str) -> str:
    return settings.s3_output_prefix.format(zone=zone, ds=ds) + DATA_FILE
