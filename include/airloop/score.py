"""Score: predict a day's rows with the champion from the offline feature partition, in chunks;
the online store is checked against it (training/serving skew)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from airloop import lake
from airloop.config import Settings
from airloop.features import online_features, training_frame
from airloop.model import predict, predicted_class
from airloop.registry import CANARY, CHALLENGER, CHAMPION, load_model, version_by_alias
from airloop.sources import export_partition
from airloop.storage import atomic_path, in_fraction, iter_batches, write_json


class NoChampion(LookupError):
    """No model version holds the ``champion`` alias yet."""


class TrainingServingSkew(RuntimeError):
    """Online features differ from the offline (training) values for the same entity and time."""


def check_skew(settings: Settings, ds: str, sample: pd.DataFrame, online: pd.DataFrame) -> dict:
    """Compare, for a sample of the day's entities (their latest ``entity, timestamp``), the online
    store's features with the offline values Feast's point-in-time join gives for the same
    timestamp (what training sees). Writes the day's skew report (``lake.skew_report``); raises
    TrainingServingSkew on any mismatch."""
    spec = settings.spec
    offline = training_frame(settings, sample[[spec.entity, spec.timestamp]])
    both = offline.merge(online, on=spec.entity, suffixes=("_offline", "_online"))
    mismatches = []
    for name in spec.model_features:
        a, b = both[f"{name}_offline"], both[f"{name}_online"]
        if name in spec.categorical_features:
            same = (a.isna() & b.isna()) | (a.astype(str) == b.astype(str))
        else:
            same = (a.isna() & b.isna()) | np.isclose(a.astype(float), b.astype(float))
        for _, row in both.loc[~same].iterrows():
            mismatches.append(
                {
                    "entity": spec.key(row[spec.entity]),
                    "feature": name,
                    "offline": row[f"{name}_offline"],
                    "online": row[f"{name}_online"],
                }
            )
    report = {"ds": ds, "sampled": len(both), "mismatches": mismatches}
    path = write_json(report, lake.skew_report(settings, ds))
    if mismatches:
        shown = "; ".join(
            f"{m['entity']}.{m['feature']}: offline {m['offline']} != online {m['online']}" for m in mismatches[:5]
        )
        raise TrainingServingSkew(
            f"training/serving skew on {ds}: {len(mismatches)} mismatching values in {len(both)} sampled "
            f"entities ({shown}); report: {path}"
        )
    return report


def plan_scoring(settings: Settings, ds: str) -> list[dict]:
    """Fix what a scoring run of ``ds`` uses and split the day into shards.

    Resolves the model versions once (the champion, and the challenger with ``shadow_scoring``), so
    every shard scores with the same model even if an alias moves mid-run. For the newest day a
    sample of entities is checked against the online store first (training/serving skew): any
    mismatch fails the run, no predictions. Shards are runs of consecutive row groups of the day's
    offline feature partition of at most ``score_shard_rows`` rows; the daily DAG maps one task
    over them, so a large day is scored on every worker at once.

    Every shard carries the plan's own token: its parts are staged under it (a retry of a shard
    rewrites the same part), so two runs of the day at once (the daily and release DAGs, a manual
    run) never touch each other's parts. Staged plans of the day untouched for :data:`STALE_PLAN_SECONDS`
    (runs that died or failed for good) are removed here."""
    import pyarrow.parquet as pq

    spec = settings.spec
    champ = version_by_alias(settings, CHAMPION)
    if champ is None:
        raise NoChampion(f"no '{CHAMPION}' version of {settings.registered_model} yet: nothing to score {ds} with")
    src = lake.data_file(settings, lake.FEATURES, ds)
    if not src.exists():
        raise FileNotFoundError(f"no features for {ds} at {src}: materialize {ds} first")
    newest = lake.dates(settings, lake.FEATURES)[-1]
    if ds >= newest and settings.skew_sample:
        keys = pd.read_parquet(src, columns=[spec.entity, spec.timestamp])
        latest = keys.sort_values(spec.timestamp).drop_duplicates(spec.entity, keep="last")
        sample = latest.sample(min(settings.skew_sample, len(latest)), random_state=settings.seed)
        check_skew(settings, ds, sample, online_features(settings, sample[spec.entity].tolist()))
    models = {lake.PREDICTIONS: champ}
    challenger = version_by_alias(settings, CHALLENGER) if settings.shadow_scoring else None
    if challenger is not None and str(challenger.version) != str(champ.version):
        # shadow: the challenger scores the same rows; its output never reaches the predictions table
        models[lake.SHADOW] = challenger
    meta = pq.ParquetFile(src).metadata
    shards: list[list[int]] = [[]]
    rows = 0
    for group in range(meta.num_row_groups):
        n = meta.row_group(group).num_rows
        if shards[-1] and rows + n > settings.score_shard_rows:
            shards.append([])
            rows = 0
        shards[-1].append(group)
        rows += n
    versions = {zone: {"version": str(mv.version), "run_id": mv.run_id} for zone, mv in models.items()}
    canary = version_by_alias(settings, CANARY) if settings.canary_fraction > 0 else None
    if canary is not None and str(canary.version) != str(champ.version):
        # a stable share of the entities (storage.in_fraction) is scored by the canary, in the same partition
        versions[lake.PREDICTIONS]["canary"] = {"version": str(canary.version), "run_id": canary.run_id}
    _remove_stale_plans(settings, ds)
    plan = uuid.uuid4().hex[:16]
    return [
        {"ds": ds, "plan": plan, "shard": i, "row_groups": groups, "models": versions}
        for i, groups in enumerate(shards)
    ]


# a plan's parts are kept this long after their last write for its run's retries (minutes apart) and
# for a person clearing a failed ``score`` task the next day; older ones are a dead run's
STALE_PLAN_SECONDS = 2 * 24 * 3600


def _plan_dir(settings: Settings, zone: str, ds: str, plan: str) -> Path:
    return lake.staging(settings, zone, ds) / f"plan-{plan}"


def _part_path(settings: Settings, zone: str, shard: dict) -> Path:
    return _plan_dir(settings, zone, shard["ds"], shard["plan"]) / f"part-{shard['shard']:05d}.parquet"


def _remove_plan(settings: Settings, shard: dict) -> None:
    """Remove the staged parts of ``shard``'s plan."""
    for zone in shard["models"]:
        shutil.rmtree(_plan_dir(settings, zone, shard["ds"], shard["plan"]), ignore_errors=True)


def _remove_stale_plans(settings: Settings, ds: str) -> None:
    """Remove the day's staged scoring parts (per plan, or loose ones) last written over
    :data:`STALE_PLAN_SECONDS` ago."""
    cutoff = time.time() - STALE_PLAN_SECONDS
    for zone in (lake.PREDICTIONS, lake.SHADOW):
        folder = lake.staging(settings, zone, ds)
        for entry in folder.iterdir() if folder.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile by another run
                inside = [entry, *entry.rglob("*")] if entry.is_dir() else [entry]
                if max(p.stat().st_mtime for p in inside) < cutoff:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def score_shard(settings: Settings, shard: dict, loaded: dict[str, Any] | None = None) -> dict:
    """Score one shard of :func:`plan_scoring` into a staging part per output zone, under its plan's
    token (atomic; a retry rewrites the same part). Reads only the shard's row groups, in chunks of
    ``settings.chunk_rows``.
    ``loaded`` maps model versions to models already loaded (the others are loaded here)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec, ds = settings.spec, shard["ds"]
    loaded = loaded or {}

    def model_of(mv: dict) -> Any:
        return loaded[mv["version"]] if mv["version"] in loaded else load_model(settings, mv["version"])

    models = {zone: (mv, model_of(mv)) for zone, mv in shard["models"].items()}
    canary = shard["models"][lake.PREDICTIONS].get("canary")
    canary_model = model_of(canary) if canary else None
    keys = [spec.entity, spec.timestamp]
    paths = {zone: _part_path(settings, zone, shard) for zone in models}
    rows = 0
    with contextlib.ExitStack() as stack:  # on exit: writers close, then each temp file is renamed
        tmp = {zone: stack.enter_context(atomic_path(path)) for zone, path in paths.items()}
        writers: dict[str, Any] = {}
        src = pq.ParquetFile(lake.data_file(settings, lake.FEATURES, ds))
        columns = [*keys, *spec.model_features]
        for batch in iter_batches(src, settings.chunk_rows, columns, shard["row_groups"]):
            feats = batch.select(spec.model_features).to_pandas()
            missing = feats.isna().all(axis=1)
            if missing.any():
                raise RuntimeError(f"{int(missing.sum())} rows of {ds} have no features: materialize {ds} again")
            for zone, (mv, model) in models.items():
                table = _predictions(settings, mv, model, pa.Table.from_batches([batch.select(keys)]), feats, ds)
                if zone == lake.PREDICTIONS and canary:
                    table = _canary_rows(settings, table, feats, canary, canary_model, ds)
                if zone not in writers:
                    writers[zone] = stack.enter_context(pq.ParquetWriter(tmp[zone], table.schema))
                writers[zone].write_table(table)
            rows += len(feats)
        for zone, (mv, model) in models.items():  # an empty shard still gets an (empty) part
            if zone not in writers:
                empty = src.schema_arrow.empty_table()
                table = _predictions(settings, mv, model, empty.select(keys), empty.select(spec.model_features), ds)
                pq.write_table(table, tmp[zone])
    return {**shard, "rows": rows, "parts": {zone: str(path) for zone, path in paths.items()}}


def publish_scores(settings: Settings, shards: list[dict], s3_client_kwargs: dict[str, Any] | None = None) -> dict:
    """Concatenate the scored shards' parts, in shard order, into the day's predictions partition (and
    the shadow one): streamed, and renamed into place at once, so readers see the whole day
    or the previous version of it, never part of a day. Only the parts of the shards' own plan are
    read, so the partition is one run's, scored by its plan's models; two runs of the day publishing at
    once each rename a whole partition (the last one stays). Then the plan's staged parts are removed.
    With ``s3_output_bucket`` the predictions are also uploaded there (``s3_client_kwargs`` for boto3)."""
    import pyarrow.parquet as pq

    shards = sorted(shards, key=lambda s: s["shard"])
    ds, models, plan = shards[0]["ds"], shards[0]["models"], shards[0]["plan"]
    if {s["plan"] for s in shards} != {plan} or [s["shard"] for s in shards] != list(range(len(shards))):
        got = [(s["plan"], s["shard"]) for s in shards]
        raise ValueError(f"the shards of {ds} to publish are not the whole of one plan: (plan, shard) {got}")
    paths = {zone: lake.data_file(settings, zone, ds) for zone in models}
    for zone, path in paths.items():
        if len(shards) == 1:  # nothing to concatenate: the part is renamed into place
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(shards[0]["parts"][zone], path)
            continue
        with atomic_path(path) as tmp:
            parts = [pq.ParquetFile(s["parts"][zone]) for s in shards]
            with pq.ParquetWriter(tmp, parts[0].schema_arrow) as writer:
                for part in parts:
                    for batch in iter_batches(part):
                        writer.write_batch(batch)
    _remove_plan(settings, shards[0])
    result = {
        "ds": ds,
        "rows": sum(s["rows"] for s in shards),
        "shards": len(shards),
        "model_version": models[lake.PREDICTIONS]["version"],
        "path": str(paths[lake.PREDICTIONS]),
    }
    if settings.s3_output_bucket:
        result["s3_uri"] = export_partition(settings, lake.PREDICTIONS, ds, s3_client_kwargs)
    if canary := models[lake.PREDICTIONS].get("canary"):
        result["canary"] = {"model_version": canary["version"], "fraction": settings.canary_fraction}
    if lake.SHADOW in models:
        shadow = models[lake.SHADOW]["version"]
        result["shadow"] = {"model_version": shadow, "path": str(paths[lake.SHADOW])}
    return result


def score_batch(settings: Settings, ds: str) -> dict:
    """Write the day's predictions partition: one row per feature row of the day, scored by the champion
    (and, with ``shadow_scoring``, by the challenger into ``predictions_shadow/``). The shards of
    :func:`plan_scoring` are scored one after another here, with the models loaded once; the daily DAG
    scores them in parallel. On failure (a full disk) the plan's staged parts are removed: no retry
    reuses them, the next call plans again."""
    shards = plan_scoring(settings, ds)
    try:
        loaded = {mv["version"]: load_model(settings, mv["version"]) for mv in shards[0]["models"].values()}
        return publish_scores(settings, [score_shard(settings, s, loaded) for s in shards])
    except BaseException:
        _remove_plan(settings, shards[0])
        raise


def _canary_rows(settings: Settings, table: Any, feats: pd.DataFrame, mv: dict, model: Any, ds: str) -> Any:
    """The champion's prediction rows with the canary's share of the entities scored by the canary instead
    (same rows, same order; ``model_version`` / ``model_run_id`` say which model scored each row)."""
    import pyarrow as pa

    spec = settings.spec
    mask = in_fraction(table.column(spec.entity).to_pandas(), settings.canary_fraction)
    if not mask.any():
        return table
    keys = table.select([spec.entity, spec.timestamp]).filter(pa.array(mask))
    theirs = _predictions(settings, mv, model, keys, feats[mask], ds).cast(table.schema)
    rows = np.arange(len(mask))
    order = np.argsort(np.concatenate([rows[~mask], rows[mask]]), kind="stable")
    return pa.concat_tables([table.filter(pa.array(~mask)), theirs]).take(order)


def _predictions(settings: Settings, mv: dict, model: Any, keys: Any, feats: Any, ds: str) -> Any:
    """The prediction rows of one chunk as an Arrow table: ``keys`` (entity, timestamp) as read, then the
    score and the model's identity (built in Arrow: no pandas round trip for the output)."""
    import pyarrow as pa

    spec, n = settings.spec, keys.num_rows
    pred = predict(settings, model, feats) if n else np.array([], dtype="float64")
    label = predicted_class(pred) if spec.task == "binary_classification" else pred
    key_type = pa.string() if spec.entity_dtype == "string" else pa.int64()
    return pa.table(
        {
            spec.entity: keys.column(spec.entity).cast(key_type),
            spec.timestamp: keys.column(spec.timestamp),
            "ds": pa.repeat(ds, n),
            "score": pa.array(pred, pa.float64()),
            "prediction": pa.array(label),
            "model_name": pa.repeat(settings.registered_model, n),
            "model_version": pa.repeat(mv["version"], n),
            "model_run_id": pa.repeat(mv["run_id"], n),
        }
    )
