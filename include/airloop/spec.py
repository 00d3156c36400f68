"""The declarative dataset spec (see ``dataset.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, field_validator, model_validator


class Feature(BaseModel):
    """One typed feature column with its allowed range or categories."""

    name: str
    dtype: Literal["int", "float", "category"]
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    max_missing: float = 0.0  # share of nulls above which the batch is blocked
    warn_missing: float | None = None  # share of nulls above which a warning is recorded
    drift: bool = True  # false: left out of the drift check (a column whose change is expected)

    @field_validator("categories", mode="before")
    @classmethod
    def _as_text(cls, values: Any) -> Any:
        """Categories may be written as numbers (integer-coded data); the batch holds them as text."""
        return (
            [v if isinstance(v, str) else str(int(v) if float(v).is_integer() else v) for v in values]
            if values
            else values
        )

    @model_validator(mode="after")
    def _check(self) -> Feature:
        if self.dtype == "category" and not self.categories:
            raise ValueError(f"feature {self.name!r}: a category feature needs 'categories'")
        return self


class Aggregate(BaseModel):
    """A per-entity windowed aggregate, computed by the features stage from past validated days."""

    name: str
    column: str
    fn: Literal["count", "mean", "sum", "max"]
    window_days: int


class Slice(BaseModel):
    """A named subgroup the promotion gate checks on its own: rows where ``column`` is one of ``values``."""

    name: str
    column: str
    values: list[str | int | float]
    floor: float | None = None  # the primary metric's floor on this slice (default: the global floor)


class RowCount(BaseModel):
    min: int = 1
    max: int = 10_000_000


class DatasetSpec(BaseModel):
    """Entity key, event timestamp, label and typed features of one dataset."""

    name: str
    task: Literal["binary_classification", "regression"]
    entity: str
    entity_dtype: Literal["int", "string"] = "int"  # the entity key's type (Feast join key INT64 or STRING)
    timestamp: str
    label: str
    label_min: float | None = None  # regression: the label's allowed range (classification labels are 0/1)
    label_max: float | None = None
    # false: the daily batch has no label column; outcomes come only from the label feed (landing/labels/)
    label_in_batch: bool = True
    rows_per_day: RowCount = RowCount()
    features: list[Feature]
    aggregates: list[Aggregate] = []
    slices: list[Slice] = []
    intended_use: str = ""  # shown on the model card
    known_limits: list[str] = []  # shown on the model card

    @model_validator(mode="after")
    def _check_aggregates(self) -> DatasetSpec:
        unknown = [a.column for a in self.aggregates if a.column not in (self.entity, *self.feature_names)]
        if unknown:
            raise ValueError(f"aggregates over unknown columns: {unknown}")
        unknown = [s.column for s in self.slices if s.column not in self.feature_names]
        if unknown:
            raise ValueError(f"slices over unknown columns: {unknown}")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def drift_features(self) -> list[str]:
        """The features the drift check compares (those not marked ``drift: false``)."""
        return [f.name for f in self.features if f.drift]

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.dtype != "category"]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.dtype == "category"]

    @property
    def aggregate_names(self) -> list[str]:
        return [a.name for a in self.aggregates]

    @property
    def model_features(self) -> list[str]:
        """What the model reads from the feature store: the batch's features and the aggregates."""
        return [*self.feature_names, *self.aggregate_names]

    def key(self, value: Any) -> int | str:
        """An entity id as the pipeline and the online store key it (``entity_dtype``)."""
        return str(value) if self.entity_dtype == "string" else int(value)

    @property
    def feature_view_name(self) -> str:
        """The Feast feature view of the batch features and aggregates."""
        return f"{self.name}_fv"

    @property
    def feature_service_name(self) -> str:
        """The Feast feature service training and scoring read (versioned, as in Feast's template)."""
        return f"{self.name}_v1"

    def feast_schema(self) -> list[tuple[str, Any]]:
        """(name, Feast type) of each feature and aggregate."""
        from feast.types import Float64, Int64, String

        types = {"int": Int64, "float": Float64, "category": String}
        return [(f.name, types[f.dtype]) for f in self.features] + [(a.name, Float64) for a in self.aggregates]

    @property
    def columns(self) -> list[str]:
        """All columns of a batch, in order (the label last, when batches carry it)."""
        return [self.entity, self.timestamp, *self.feature_names, *([self.label] if self.label_in_batch else [])]


def load_spec(path: Path) -> DatasetSpec:
    """Read and validate a dataset spec from YAML."""
    return DatasetSpec.model_validate(yaml.safe_load(Path(path).read_text()))
