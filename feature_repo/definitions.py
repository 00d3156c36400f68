"""Feast catalogue for airloop: one declaration per object, schemas derived from the dataset spec."""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType

from airloop.config import get_settings
from airloop.features import feast_schema

settings = get_settings()
spec = settings.spec

# The customer whose daily snapshot we score.
customer = Entity(name=spec.entity, join_keys=[spec.entity], value_type=ValueType.INT64, description="A subscriber.")

# Validated daily snapshots, one parquet file per date, written by the pipeline's features stage.
customer_snapshots_source = FileSource(
    name="customer_snapshots_source",
    path=str(settings.features_dir),
    timestamp_field=spec.timestamp,
)

# The snapshot features of a customer; a value older than the TTL is treated as missing.
customer_snapshot_fv = FeatureView(
    name="customer_snapshot_fv",
    entities=[customer],
    ttl=timedelta(days=settings.feature_ttl_days),
    schema=[Field(name=name, dtype=dtype) for name, dtype in feast_schema(spec)],
    source=customer_snapshots_source,
    online=True,
)

# What the churn model reads, for training and serving alike. Training refers to it by name.
churn_v1 = FeatureService(name="churn_v1", features=[customer_snapshot_fv])
