"""Feast catalogue for airloop: one declaration per object, names and schemas derived from the dataset spec."""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType

from airloop import lake
from airloop.config import get_settings

settings = get_settings()
spec = settings.spec

# The entity whose rows we score, keyed by the spec's entity column.
entity = Entity(
    name=spec.entity,
    join_keys=[spec.entity],
    value_type=ValueType.STRING if spec.entity_dtype == "string" else ValueType.INT64,
    description=f"The entity of dataset {spec.name}.",
)

# Validated daily feature rows (batch features + aggregates), one parquet file per date, written by the
# pipeline's features stage.
features_source = FileSource(
    name=f"{spec.name}_source",
    path=str(lake.zone_dir(settings, lake.FEATURES)),
    timestamp_field=spec.timestamp,
)

# The entity's features; a value older than the TTL is treated as missing.
features_fv = FeatureView(
    name=spec.feature_view_name,
    entities=[entity],
    ttl=timedelta(days=settings.feature_ttl_days),
    schema=[Field(name=name, dtype=dtype) for name, dtype in spec.feast_schema()],
    source=features_source,
    online=True,
)

# What the model reads, for training and serving alike. Training refers to it by name.
feature_service = FeatureService(name=spec.feature_service_name, features=[features_fv])
