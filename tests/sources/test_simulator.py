"""Simulator: reproducibility, ordering, contract, and the hidden churn process."""

from __future__ import annotations

import time
from itertools import islice

import pandas as pd
import pytest

from sources.contract import EVENT_TYPES, contract_errors
from sources.simulator import PLAN_PRICES, PLANS, SimulationConfig, ground_truth, simulate

CFG = SimulationConfig(n_users=800, days=56, seed=11)


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return list(simulate(CFG))


@pytest.fixture(scope="module")
def frame(events: list[dict]) -> pd.DataFrame:
    """One row per event with the columns the behavioural tests need."""
    df = pd.DataFrame(
        {
            "user_id": [e["user_id"] for e in events],
            "event_type": [e["event_type"] for e in events],
            "event_time": pd.to_datetime([e["event_time"] for e in events]),
            "session_id": [e["properties"].get("session_id") for e in events],
        }
    )
    df["day"] = df["event_time"].dt.tz_convert(None).dt.normalize()
    return df


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    return ground_truth(CFG)


def test_same_seed_same_events_and_different_seed_differs() -> None:
    small = SimulationConfig(n_users=200, days=10, seed=3)
    first = list(islice(simulate(small), 3000))
    assert first == list(islice(simulate(small), 3000))
    other = list(islice(simulate(SimulationConfig(n_users=200, days=10, seed=4)), 3000))
    assert [e["user_id"] for e in first] != [e["user_id"] for e in other]
    assert ground_truth(small).equals(ground_truth(small))


def test_events_in_time_order_with_unique_deterministic_ids(events: list[dict]) -> None:
    times = [e["event_time"] for e in events]
    assert times == sorted(times)  # fixed-width ISO strings sort like the instants
    assert [e["event_id"] for e in events] == [f"sim-11-{n}" for n in range(len(events))]
    assert times[0] >= "2024-01-01T00:00:00.000Z" and times[-1] < "2024-02-26T00:00:00.000Z"


def test_every_event_matches_contract_and_all_types_occur(events: list[dict]) -> None:
    errors = {i: contract_errors(e) for i, e in enumerate(events) if contract_errors(e)}
    assert errors == {}
    assert {e["event_type"] for e in events} == set(EVENT_TYPES)
    for e in events:
        props = e["properties"]
        if e["event_type"] in ("purchase", "refund", "checkout"):
            assert props["amount"] > 0 and props["quantity"] >= 1 and props["currency"] == "GBP"
        if e["event_type"] in ("session_start", "page_view", "search", "cart_add", "purchase"):
            assert "session_id" in props
        if e["event_type"] in ("support_contact", "refund", "subscription_cancel"):
            assert "session_id" not in props
        if e["event_type"] in ("subscription_start", "subscription_change"):
            assert props["amount"] == PLAN_PRICES[PLANS.index(props["plan"])]


def test_sessions_follow_the_funnel(frame: pd.DataFrame) -> None:
    sessions = frame.dropna(subset=["session_id"]).groupby("session_id", sort=False)
    first = sessions["event_type"].first()
    assert (first == "session_start").all()
    assert (sessions["user_id"].nunique() == 1).all()
    assert (sessions["day"].nunique() == 1).all()  # sessions do not cross midnight
    with_purchase = frame[frame["event_type"] == "purchase"]["session_id"]
    funnel = frame[frame["session_id"].isin(with_purchase)].groupby("session_id")["event_type"]
    assert (funnel.last() == "purchase").all()
    assert funnel.apply(lambda t: "cart_add" in set(t) and list(t)[-2] == "checkout").all()


def test_users_act_only_between_signup_and_churn(frame: pd.DataFrame, truth: pd.DataFrame) -> None:
    df = frame.merge(truth, on="user_id", how="left", validate="many_to_one")
    assert df["signup_date"].notna().all()
    assert (df["day"] >= df["signup_date"]).all()
    churned = df[df["churn_date"].notna()]
    assert len(churned) > 0
    assert (churned["day"] <= churned["churn_date"]).all()
    on_churn_day = churned[churned["day"] == churned["churn_date"]]
    assert set(on_churn_day["event_type"]) == {"subscription_cancel"}


def test_churn_is_preceded_by_decay(frame: pd.DataFrame, truth: pd.DataFrame) -> None:
    """Churners are less active in their last 2 weeks than the 4 weeks before, and
    contact support more often then than users who stay."""
    start = pd.Timestamp(CFG.start)
    late = truth[truth["churn_date"] >= start + pd.Timedelta(days=42)]
    late = late[late["signup_date"] < start]
    assert len(late) >= 20
    df = frame.merge(late[["user_id", "churn_date"]], on="user_id", how="inner")
    days_left = (df["churn_date"] - df["day"]).dt.days
    last2 = (days_left <= 14).groupby(df["user_id"]).sum() / 14
    before = days_left.between(15, 42).groupby(df["user_id"]).sum() / 28
    assert last2.mean() < 0.6 * before.mean()

    support = frame[frame["event_type"] == "support_contact"]
    sup_late = support.merge(late[["user_id", "churn_date"]], on="user_id", how="inner")
    near = (sup_late["churn_date"] - sup_late["day"]).dt.days <= 14
    churner_rate = near.sum() / (14 * len(late))
    stayers = truth[truth["churn_date"].isna() & (truth["signup_date"] < start)]
    stayer_rate = support["user_id"].isin(stayers["user_id"]).sum() / (CFG.days * len(stayers))
    assert churner_rate > 2 * stayer_rate


def test_churn_hazard_depends_on_traits(truth: pd.DataFrame) -> None:
    churned = truth["churn_date"].notna()
    low, high = truth["base_engagement"].quantile([0.25, 0.75])
    assert (
        churned[truth["base_engagement"] <= low].mean()
        > churned[truth["base_engagement"] >= high].mean()
    )
    assert (
        churned[truth["initial_plan"] == "free"].mean()
        > churned[truth["initial_plan"] == "premium"].mean()
    )


def test_weekends_are_busier(frame: pd.DataFrame) -> None:
    per_day = frame[frame["event_type"] == "session_start"].groupby("day").size()
    weekend = per_day.index.dayofweek >= 5
    assert per_day[weekend].mean() > 1.1 * per_day[~weekend].mean()


def test_population_grows_by_signups(truth: pd.DataFrame) -> None:
    start = pd.Timestamp(CFG.start)
    new = truth[truth["signup_date"] >= start]
    assert (truth["signup_date"] < start).sum() == CFG.n_users
    expected = CFG.n_users * CFG.signup_fraction_per_day * CFG.days
    assert 0.6 * expected < len(new) < 1.4 * expected
    assert truth["user_id"].is_unique


def test_generation_rate_is_reported() -> None:
    cfg = SimulationConfig(n_users=1000, days=30, seed=1)
    t0 = time.perf_counter()
    n = sum(1 for _ in simulate(cfg))
    elapsed = time.perf_counter() - t0
    print(f"simulator: {n} events in {elapsed:.2f} s = {n / elapsed:,.0f} events/s")
    assert n > 0
