"""The declarative dataset spec (see ``dataset.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, model_validator


class Feature(BaseModel):
    """One typed feature column with its allowed range or categories."""

    name: str
    dtype: Literal["int", "float", "category"]
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    max_missing: float = 0.0  # share of nulls above which the batch is blocked
    warn_missing: float | None = None  # share of nulls above which a warning is recorded

    @model_validator(mode="after")
    def _check(self) -> Feature:
        if self.dtype == "category" and not self.categories:
            raise ValueError(f"feature {self.name!r}: a category feature needs 'categories'")
        return self


class RowCount(BaseModel):
    min: int = 1
    max: int = 10_000_000


class DatasetSpec(BaseModel):
    """Entity key, event timestamp, label and typed features of one dataset."""

    name: str
    task: Literal["binary_classification", "regression"]
    entity: str
    timestamp: str
    label: str
    positive_label: int | None = 1
    rows_per_day: RowCount = RowCount()
    features: list[Feature]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.dtype != "category"]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.dtype == "category"]

    @property
    def columns(self) -> list[str]:
        """All columns of a batch, in order."""
        return [self.entity, self.timestamp, *self.feature_names, self.label]


def load_spec(path: Path) -> DatasetSpec:
    """Read and validate a dataset spec from YAML."""
    return DatasetSpec.model_validate(yaml.safe_load(Path(path).read_text()))
