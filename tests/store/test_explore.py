"""store.explore's pandas parts: the representative user and the distribution summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from store.explore import describe_features, typical_user


def test_typical_user_is_the_median_by_activity_with_ties_by_id():
    frame = pd.DataFrame({"user_id": ["d", "a", "c", "b", "e"], "n_events_90d": [9, 1, 5, 5, 7]})
    # sorted: a(1), b(5), c(5), e(7), d(9) -> the middle one
    assert typical_user(frame) == "c"


def test_describe_features_shares_and_quantiles():
    frame = pd.DataFrame({"x": [0.0, 0.0, 1.0, 3.0, np.nan], "y": [1.0, 2.0, 3.0, 4.0, 5.0]})
    out = describe_features(frame, ["x", "y"])
    assert out.loc["x", "null_share"] == 0.2
    assert out.loc["x", "zero_share"] == 0.4
    assert out.loc["y", "p50"] == 3.0 and out.loc["y", "max"] == 5.0
