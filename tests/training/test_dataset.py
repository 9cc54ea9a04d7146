"""The training set for many cutoffs at once equals the stream's features cutoff by cutoff.

training.dataset builds every cutoff in one plan (lifetime merged period by period, window
rows joined to the cutoffs whose windows hold them; docs/decisions.md, decision 37). The
reference here is what a scorer sees: features.compute.compute_features over
lifetime_as_of(daily, cutoff), one cutoff at a time, and spine and labels counted in pandas
from the same daily rows.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features, lifetime_as_of
from features.registry import FEATURE_NAMES
from sources.simulator import SimulationConfig
from training.dataset import TRAINING_COLUMNS, training_set

LOOKBACK, HORIZON = 14, 21


@pytest.fixture(scope="module")
def simulated(simulated_daily):
    daily = simulated_daily(SimulationConfig(n_users=150, days=120, seed=11)).cache()
    days = daily.select("user_id", "activity_date", "n_events").toPandas()
    first, last = days["activity_date"].min(), days["activity_date"].max()
    # Irregular cutoffs, the first one before most users' history has begun.
    cutoffs = [first + timedelta(days=n) for n in (3, 10, 24, 25, 40, 61, 75)]
    assert cutoffs[-1] + timedelta(days=HORIZON) <= last
    rows = training_set(daily, cutoffs, lookback_days=LOOKBACK, horizon_days=HORIZON)
    yield daily, days, cutoffs, rows.toPandas()
    daily.unpersist()


def test_spine_and_labels_match_a_count_over_the_daily_rows(simulated):
    _, days, cutoffs, rows = simulated
    active = days[days["n_events"] > 0]
    expected = []
    for c in cutoffs:
        for user, d in active.groupby("user_id")["activity_date"]:
            if ((d >= c - timedelta(days=LOOKBACK)) & (d < c)).any():
                after = ((d >= c) & (d < c + timedelta(days=HORIZON))).any()
                expected.append((user, c, int(not after)))
    got = sorted(rows[["user_id", "cutoff", "churned"]].itertuples(index=False, name=None))
    assert got == sorted(expected)
    assert 0 < rows["churned"].mean() < 1


def test_features_equal_the_stream_s_features_at_each_cutoff(simulated):
    daily, _, cutoffs, rows = simulated
    assert tuple(rows.columns) == TRAINING_COLUMNS
    for c in cutoffs:
        ours = rows[rows["cutoff"] == c].set_index("user_id")[list(FEATURE_NAMES)].sort_index()
        theirs = (
            compute_features(daily, lifetime_as_of(daily, c), c)
            .toPandas()
            .set_index("user_id")
            .loc[ours.index, list(FEATURE_NAMES)]
            .astype("float64")
        )
        assert len(ours) > 0
        pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=1e-12, atol=0.0)
        # Nulls mean "undefined" to LightGBM: they must be the same cells, not near-zeros.
        assert np.array_equal(ours.isna().to_numpy(), theirs.isna().to_numpy())


def test_one_cutoff_alone_gives_its_rows_of_many(simulated):
    daily, _, cutoffs, rows = simulated
    c = cutoffs[3]
    alone = training_set(daily, [c], lookback_days=LOOKBACK, horizon_days=HORIZON).toPandas()
    many = rows[rows["cutoff"] == c]
    key = ["user_id"]
    pd.testing.assert_frame_equal(
        alone.sort_values(key, ignore_index=True),
        many.sort_values(key, ignore_index=True),
        check_exact=False,
        rtol=1e-12,
    )


def test_cutoffs_before_any_activity_give_no_rows(simulated):
    daily, days, _, _ = simulated
    early = days["activity_date"].min() - timedelta(days=30)
    assert training_set(daily, [early], lookback_days=LOOKBACK, horizon_days=HORIZON).count() == 0
    assert isinstance(early, date)
