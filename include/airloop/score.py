"""Score: predict the day's entities with the champion, reading features from the online store."""

from __future__ import annotations

import pandas as pd

from airloop.config import Settings
from airloop.features import online_features
from airloop.registry import CHAMPION, load_model, version_by_alias
from airloop.storage import DATA_FILE, write_parquet


class NoChampion(LookupError):
    """No model version holds the ``champion`` alias yet."""


def score_batch(settings: Settings, ds: str) -> dict:
    """Write ``predictions/ds=<ds>`` for the entities of that day's validated batch."""
    spec = settings.spec
    champ = version_by_alias(settings, CHAMPION)
    if champ is None:
        raise NoChampion(f"no '{CHAMPION}' version of {settings.model_name} yet: nothing to score {ds} with")
    src = settings.partition("validated", ds) / DATA_FILE
    if not src.exists():
        raise FileNotFoundError(f"no validated partition for {ds} at {src}")
    ids = pd.read_parquet(src, columns=[spec.entity])[spec.entity].drop_duplicates().sort_values().tolist()
    feats = online_features(settings, ids)
    missing = feats[spec.feature_names].isna().all(axis=1)
    if missing.any():
        raise RuntimeError(f"{int(missing.sum())} entities of {ds} have no online features: materialize {ds} first")
    model = load_model(settings, champ.version)
    proba = model.predict_proba(feats[spec.feature_names])[:, 1]
    out = pd.DataFrame(
        {
            spec.entity: feats[spec.entity].astype("int64"),
            "ds": ds,
            "score": proba,
            "prediction": (proba >= 0.5).astype("int64"),
            "model_name": settings.model_name,
            "model_version": str(champ.version),
            "model_run_id": champ.run_id,
        }
    )
    path = write_parquet(out, settings.partition("predictions", ds) / DATA_FILE)
    return {"ds": ds, "rows": len(out), "model_version": str(champ.version), "path": str(path)}
