"""Data and model tests on simulator data: the rows, the fit, the baselines, behaviour."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from features.compute import compute_features, lifetime_as_of
from features.registry import FEATURE_NAMES
from sources.simulator import SimulationConfig
from training.model import fit_lightgbm, lightgbm_params, predict
from training.pipeline import fit_and_evaluate

# Small: the behaviour and data tests need a trained model, not a good one. The comparison
# with the baselines needs more data and lives in test_model_vs_baselines.py (slow).
SIM = SimulationConfig(n_users=800, days=100, seed=3)


@pytest.fixture(scope="module")
def sim_split(build_split, base_config):
    return build_split(SIM, base_config.training.model_copy(update={"max_cutoffs": 3}))


@pytest.fixture(scope="module")
def fitted(sim_split, base_config):
    return fit_and_evaluate(sim_split[1], base_config.training)


def test_training_rows_are_unique_eligible_and_labelled(sim_split, base_config):
    split, parts = sim_split
    t = base_config.training
    for name, part in parts.items():
        assert set(part["cutoff"]) == set(split.of(name))
        assert not part.duplicated(["user_id", "cutoff"]).any()
        assert set(part["churned"]) == {0, 1}
        assert 0.05 < part["churned"].mean() < 0.4, name
        # eligible = active in the lookback: last active day is 1..lookback days back
        assert part["days_since_last_event"].between(1, t.lookback_days).all()
        assert part["n_events_90d"].notna().all()


def test_scores_are_probabilities_on_the_training_base_rate(fitted):
    train = fitted.parts["train"]
    assert fitted.params["scale_pos_weight"] > 3  # imbalance handled by weighting...
    mean = predict(fitted.booster, train[FEATURE_NAMES]).mean()
    assert mean == pytest.approx(train["churned"].mean(), abs=1e-4)  # ...then shifted back


def test_fit_is_deterministic_for_a_seed(sim_split, base_config):
    parts = sim_split[1]
    hyper = base_config.training.lightgbm.model_dump()
    params = lightgbm_params(hyper, 2.0)

    def fit():
        return fit_lightgbm(
            parts["train"][FEATURE_NAMES],
            parts["train"]["churned"],
            parts["valid"][FEATURE_NAMES],
            parts["valid"]["churned"],
            params,
            num_boost_round=40,
            early_stopping_rounds=10,
        )

    first, second = fit(), fit()
    assert first.model_to_string() == second.model_to_string()


def _user(user: str, cutoff: date, silent_days: int) -> list[tuple]:
    """90 days of a moderately engaged user (a session every other day, a purchase every
    tenth day) that ends `silent_days` before the cutoff."""
    from datetime import UTC, datetime

    rows = []
    for back in range(90, silent_days, -1):
        d = cutoff - timedelta(days=back)
        t = datetime(d.year, d.month, d.day, 19, tzinfo=UTC)
        if back % 2 == 0:
            rows += [
                (user, "session_start", t, None, None),
                (user, "page_view", t, None, None),
                (user, "page_view", t, None, None),
            ]
        if back % 10 == 0:
            rows.append((user, "purchase", t, 25.0, 1))
    return rows


def test_a_user_whose_activity_stops_scores_higher_than_one_who_stays(make_daily, fitted):
    cutoff = date(2024, 6, 3)
    users = {"stays": 0, "quiet-7d": 7, "quiet-14d": 14, "quiet-21d": 21}
    daily = make_daily([row for u, silent in users.items() for row in _user(u, cutoff, silent)])
    vectors = compute_features(daily, lifetime_as_of(daily, cutoff), cutoff)
    x = vectors.toPandas().set_index("user_id").loc[list(users)]
    scores = dict(zip(users, predict(fitted.booster, x[FEATURE_NAMES]), strict=True))
    print(f"\nscores: {scores}")
    assert scores["quiet-7d"] > scores["stays"]
    # and the longer the silence, the higher the score
    assert list(scores.values()) == sorted(scores.values())
    assert np.all(np.isfinite(list(scores.values())))
