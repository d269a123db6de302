"""The comparison stage refuses missing or corrupt models clearly and writes nothing then."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from catdog.compare import ModelLoadError, compare
from conftest import tiny_config


def assert_nothing_written(root: Path) -> None:
    assert not (root / "reports").exists()
    assert not (root / "metrics" / "compare.json").exists()
    assert not (root / "plots" / "compare").exists()
    client = MlflowClient()
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_missing_model_names_the_variant_and_path(split_data: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"variant 'baseline': model file models/baseline/model.keras not found"):
        compare(tiny_config("baseline"))
    assert_nothing_written(split_data)


def test_a_corrupt_model_names_the_variant_and_path(split_data: Path) -> None:
    model = split_data / "models" / "baseline" / "model.keras"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"PK\x03\x04 this is not a keras archive")
    with pytest.raises(ModelLoadError, match=r"variant 'baseline': model file .*model.keras could not be loaded"):
        compare(tiny_config("baseline"))
    assert_nothing_written(split_data)
