"""Score: predict the day's entities with the champion, reading features from the online store."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from airloop.config import Settings
from airloop.features import online_features, training_frame
from airloop.registry import CHALLENGER, CHAMPION, load_model, version_by_alias
from airloop.storage import DATA_FILE, write_json, write_parquet
from airloop.train import predict


class NoChampion(LookupError):
    """No model version holds the ``champion`` alias yet."""


class TrainingServingSkew(RuntimeError):
    """Online features differ from the offline (training) values for the same entity and time."""


def check_skew(settings: Settings, ds: str, batch: pd.DataFrame, online: pd.DataFrame) -> dict:
    """Compare, for a sample of the day's entities, the online features scoring reads with the
    offline values Feast's point-in-time join gives for the same timestamp (what training sees).
    Writes ``monitoring/skew/ds=<ds>.json``; raises TrainingServingSkew on any mismatch."""
    spec = settings.spec
    latest = batch.sort_values(spec.timestamp).drop_duplicates(spec.entity, keep="last")
    sample = latest.sample(min(settings.skew_sample, len(latest)), random_state=settings.seed)
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
                    "entity": int(row[spec.entity]),
                    "feature": name,
                    "offline": row[f"{name}_offline"],
                    "online": row[f"{name}_online"],
                }
            )
    report = {"ds": ds, "sampled": len(both), "mismatches": mismatches}
    write_json(report, settings.monitoring_dir / "skew" / f"ds={ds}.json")
    if mismatches:
        shown = "; ".join(
            f"{m['entity']}.{m['feature']}: offline {m['offline']} != online {m['online']}" for m in mismatches[:5]
        )
        raise TrainingServingSkew(
            f"training/serving skew on {ds}: {len(mismatches)} mismatching values in {len(both)} sampled "
            f"entities ({shown}); report: {settings.monitoring_dir / 'skew' / f'ds={ds}.json'}"
        )
    return report


def score_batch(settings: Settings, ds: str) -> dict:
    """Write ``predictions/ds=<ds>`` for the entities of that day's validated batch. The newest day
    reads the online store (checked for training/serving skew); an older day (a backfill or a
    released batch) reads the offline point-in-time values of its own timestamps, because the
    online store already holds later values."""
    spec = settings.spec
    champ = version_by_alias(settings, CHAMPION)
    if champ is None:
        raise NoChampion(f"no '{CHAMPION}' version of {settings.model_name} yet: nothing to score {ds} with")
    src = settings.partition("validated", ds) / DATA_FILE
    if not src.exists():
        raise FileNotFoundError(f"no validated partition for {ds} at {src}")
    batch = pd.read_parquet(src, columns=[spec.entity, spec.timestamp])
    newest = max((p.stem for p in settings.features_dir.glob("*.parquet")), default=ds)
    source = "online" if ds >= newest else "offline"
    if source == "online":
        feats = online_features(settings, batch[spec.entity].drop_duplicates().sort_values().tolist())
    else:
        latest = batch.sort_values(spec.timestamp).drop_duplicates(spec.entity, keep="last")
        feats = training_frame(settings, latest[[spec.entity, spec.timestamp]]).sort_values(spec.entity)
    missing = feats[spec.model_features].isna().all(axis=1)
    if missing.any():
        raise RuntimeError(f"{int(missing.sum())} entities of {ds} have no {source} features: materialize {ds} first")
    if source == "online" and settings.skew_sample:
        check_skew(settings, ds, batch, feats)
    out = _predictions(settings, champ, feats, ds, source)
    path = write_parquet(out, settings.partition("predictions", ds) / DATA_FILE)
    result = {"ds": ds, "rows": len(out), "model_version": str(champ.version), "features": source, "path": str(path)}
    challenger = version_by_alias(settings, CHALLENGER) if settings.shadow_scoring else None
    if challenger is not None and str(challenger.version) != str(champ.version):
        # shadow: the challenger scores the same rows; its output never reaches the predictions table
        shadow = write_parquet(
            _predictions(settings, challenger, feats, ds, source),
            settings.partition("predictions_shadow", ds) / DATA_FILE,
        )
        result["shadow"] = {"model_version": str(challenger.version), "path": str(shadow)}
    return result


def _predictions(settings: Settings, mv: Any, feats: pd.DataFrame, ds: str, source: str) -> pd.DataFrame:
    spec = settings.spec
    pred = predict(settings, load_model(settings, mv.version), feats[spec.model_features])
    return pd.DataFrame(
        {
            spec.entity: feats[spec.entity].astype("int64"),
            "ds": ds,
            "score": pred,
            "prediction": (pred >= 0.5).astype("int64") if spec.task == "binary_classification" else pred,
            "model_name": settings.model_name,
            "model_version": str(mv.version),
            "model_run_id": mv.run_id,
            "feature_source": source,
        }
    )
