"""What a run logs that can be checked without a tracking server."""

from __future__ import annotations

import warnings
from datetime import date

import numpy as np
import pandas as pd
import pytest
from mlflow.data.pandas_dataset import from_pandas

from features.registry import FEATURE_NAMES
from training.spine import LABEL
from training.tracking import dataset_schema, split_dataset

LINEAGE = {"table_path": "/tmp/warehouse/user_activity_daily", "table_version": 3}


def training_rows(n: int, *, missing: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows shaped like training.pipeline.collect_rows's, with NaN in the `missing` columns."""
    rng = np.random.default_rng(1)
    rows = pd.DataFrame(rng.random((n, len(FEATURE_NAMES))), columns=list(FEATURE_NAMES))
    for name in missing:
        rows.loc[rng.random(n) < 0.1, name] = np.nan
    rows.insert(0, LABEL, rng.integers(0, 2, n).astype("int64"))
    rows.insert(0, "cutoff", date(2024, 3, 1))
    rows.insert(0, "user_id", [f"u{i}" for i in range(n)])
    return rows


@pytest.mark.parametrize("missing", [(), (FEATURE_NAMES[0],), tuple(FEATURE_NAMES[::3])])
def test_the_dataset_schema_is_the_one_mlflow_infers(missing):
    frame = training_rows(500, missing=missing).assign(cutoff=lambda f: pd.to_datetime(f.cutoff))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inferred = from_pandas(frame).schema
        ours = dataset_schema(frame)
    assert ours == inferred
    assert {c.name for c in ours.inputs if not c.required} == set(missing)


def test_a_nan_after_the_first_hundred_rows_makes_the_column_optional():
    frame = training_rows(300)
    frame.loc[250, FEATURE_NAMES[1]] = np.nan
    schema = split_dataset(frame, LINEAGE, "train").schema
    assert [c.name for c in schema.inputs if not c.required] == [FEATURE_NAMES[1]]


def test_a_split_dataset_names_its_table_version_and_split():
    ds = split_dataset(training_rows(20), LINEAGE, "valid")
    assert ds.name == "user_activity_daily@v3:valid"
    assert ds.targets == LABEL
    assert ds.source.to_dict()["path"] == LINEAGE["table_path"]
