"""The dataset spec: documented field by field (docs/spec.md; a field added without a line there fails here),
and what it accepts of users' data."""

from __future__ import annotations

from pathlib import Path

import pytest

from airloop.spec import Aggregate, DatasetSpec, Feature, RowCount, Slice

ROOT = Path(__file__).resolve().parents[1]


def test_every_field_of_the_spec_is_documented():
    doc = (ROOT / "docs" / "spec.md").read_text()
    fields = {name for model in (DatasetSpec, Feature, Aggregate, Slice, RowCount) for name in model.model_fields}
    missing = sorted(f for f in fields if f"`{f}`" not in doc)
    assert not missing, f"docs/spec.md does not document {missing}"


def test_integer_coded_categories_are_accepted_as_text():
    f = Feature(name="season", dtype="category", categories=[1, 2, 3, 4])
    assert f.categories == ["1", "2", "3", "4"]


def test_a_category_needs_its_categories():
    with pytest.raises(ValueError, match="needs 'categories'"):
        Feature(name="plan", dtype="category")


def test_entity_keys_follow_the_entity_dtype():
    base = {"name": "x", "task": "regression", "entity": "e", "timestamp": "t", "label": "y"}
    features = [{"name": "a", "dtype": "float"}]
    assert DatasetSpec(**base, features=features).key("7") == 7
    assert DatasetSpec(**base, entity_dtype="string", features=features).key(7) == "7"
