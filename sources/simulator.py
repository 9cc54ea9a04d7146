"""Reproducible simulator of a user population with a hidden churn process.

Two random streams are kept apart on purpose. The *latent* stream decides, per user and
day, how many sessions, purchases, support contacts and refunds happen and who starts to
churn; it is cheap, so `ground_truth` replays it without rendering any event. The *render*
stream (one per day) turns those counts into events with times, products and amounts.
See docs/sources.md for what carries churn signal.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from sources.contract import DEVICES, EVENT_TYPES, SCHEMA_VERSION

PLANS: tuple[str, ...] = ("free", "basic", "premium")
PLAN_PRICES = np.array([0.0, 4.99, 9.99])
_T = {name: i for i, name in enumerate(EVENT_TYPES)}
_NEVER = np.iinfo(np.int32).max
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class SimulationConfig:
    """Population, period and behaviour knobs; the same config always yields the same events."""

    n_users: int = 2000  # population already signed up at day 0
    days: int = 60
    start: date = date(2024, 1, 1)
    seed: int = 7
    signup_fraction_per_day: float = 0.005  # new sign-ups a day, as a fraction of n_users
    initial_tenure_days: int = 365  # the day-0 population signed up uniformly this far back
    sessions_per_day: float = 0.2  # mean base engagement of an active user
    weekend_factor: float = 1.3  # sessions on Saturday/Sunday relative to weekdays
    trend_per_day: float = 0.002  # mild linear growth in engagement
    base_churn_hazard: float = 0.003  # daily chance an average user starts to disengage
    decay_days: tuple[int, int] = (7, 28)  # length of the pre-churn decline, inclusive
    bad_experience_weight: float = 0.35  # log-hazard added per recent support contact/refund
    bad_experience_half_life: float = 14.0  # days for a bad experience to half its effect
    cancel_on_churn_prob: float = 0.3  # paid users who send subscription_cancel when leaving
    n_products: int = 500
    currency: str = "GBP"


class _DayPlan(NamedTuple):
    """Latent counts for one day, aligned with `users` (the active users)."""

    day: int
    users: np.ndarray
    engagement: np.ndarray  # 1 when healthy, falling towards 0.1 before churn
    sessions: np.ndarray
    purchases: np.ndarray
    support: np.ndarray
    refunds: np.ndarray
    sub_start: np.ndarray  # user indices (new paid sign-ups)
    sub_change: np.ndarray  # user indices
    sub_change_plan: np.ndarray  # their new plan
    sub_cancel: np.ndarray  # user indices (churning today)


class _Latent:
    """Population traits and the hidden day-by-day process (no events)."""

    def __init__(self, cfg: SimulationConfig) -> None:
        self.cfg = cfg
        rng = self.rng = np.random.default_rng([cfg.seed, 0])
        new = rng.poisson(cfg.n_users * cfg.signup_fraction_per_day, cfg.days)
        self.signup_day = np.concatenate(
            [
                -rng.integers(1, cfg.initial_tenure_days + 1, cfg.n_users),
                np.repeat(np.arange(cfg.days), new),
            ]
        ).astype(np.int32)
        n = self.n = len(self.signup_day)
        sigma = 0.8
        self.base_engagement = cfg.sessions_per_day * rng.lognormal(-(sigma**2) / 2, sigma, n)
        self.price_sensitivity = rng.beta(2.0, 2.0, n)
        self.device = rng.choice(len(DEVICES), n, p=[0.45, 0.3, 0.2, 0.05]).astype(np.int8)
        self.initial_plan = rng.choice(3, n, p=[0.6, 0.3, 0.1]).astype(np.int8)
        self.plan = self.initial_plan.copy()
        self.churn_day = np.full(n, _NEVER, dtype=np.int32)
        self.decay_len = np.ones(n, dtype=np.int32)
        self.bad = np.zeros(n)  # decayed count of support contacts and refunds
        self.bought = np.zeros(n, dtype=bool)  # refunds need an earlier purchase
        # log(engagement) z-score: the less engaged a user, the likelier to leave.
        log_eng = np.log(self.base_engagement)
        self.eng_z = (log_eng - log_eng.mean()) / (log_eng.std() or 1.0)

    def days(self) -> Iterator[_DayPlan]:
        cfg, rng = self.cfg, self.rng
        keep_bad = 0.5 ** (1.0 / cfg.bad_experience_half_life)
        for d in range(cfg.days):
            weekday = (cfg.start + timedelta(days=d)).weekday()
            season = (cfg.weekend_factor if weekday >= 5 else 1.0) * (1 + cfg.trend_per_day * d)
            users = np.flatnonzero((self.signup_day <= d) & (d < self.churn_day))
            churn = self.churn_day[users]
            decaying = churn != _NEVER
            left = np.where(decaying, churn - d, 1) / self.decay_len[users]
            engagement = np.where(decaying, 0.1 + 0.9 * left**1.5, 1.0)
            gloom = 1.0 - engagement

            sessions = rng.poisson(self.base_engagement[users] * engagement * season)
            new_today = self.signup_day[users] == d
            sessions[new_today] = np.maximum(sessions[new_today], 1)  # sign-up is a session
            p_buy = 0.3 * (1 - 0.6 * self.price_sensitivity[users]) * (0.4 + 0.6 * engagement)
            purchases = rng.binomial(sessions, p_buy)
            support = rng.poisson(0.01 + 0.08 * gloom)
            refunds = rng.poisson((0.008 + 0.06 * gloom) * self.bought[users])

            # Paid users on their way out downgrade; healthy ones rarely upgrade.
            plan = self.plan[users]
            u = rng.random(len(users))
            down = (plan > 0) & (u < 0.05 * gloom)
            up = ~decaying & (plan < 2) & (u > 1 - 0.002)
            changed = users[down | up]
            self.plan[users[down]] -= 1
            self.plan[users[up]] += 1

            leaving = np.flatnonzero(self.churn_day == d)
            cancel = leaving[
                (self.plan[leaving] > 0) & (rng.random(len(leaving)) < cfg.cancel_on_churn_prob)
            ]
            signups = np.flatnonzero(self.signup_day == d)
            yield _DayPlan(
                d, users, engagement, sessions, purchases, support, refunds,
                signups[self.initial_plan[signups] > 0], changed, self.plan[changed], cancel,
            )  # fmt: skip

            self.bought[users[purchases > 0]] = True
            self.bad[users] = self.bad[users] * keep_bad + support + refunds
            # Who starts to disengage tomorrow: traits and bad experiences raise the hazard.
            healthy = users[~decaying]
            tenure = d - self.signup_day[healthy]
            log_h = (
                -0.5 * self.eng_z[healthy]
                + 1.2 * (self.price_sensitivity[healthy] - 0.5)
                + 0.5 * (self.plan[healthy] == 0)
                - 0.4 * (self.plan[healthy] == 2)
                + cfg.bad_experience_weight * self.bad[healthy]
                + np.log1p(1.5 * np.exp(-tenure / 30.0))
            )
            onset = healthy[rng.random(len(healthy)) < cfg.base_churn_hazard * np.exp(log_h)]
            lo, hi = cfg.decay_days
            self.decay_len[onset] = rng.integers(lo, hi + 1, len(onset))
            self.churn_day[onset] = d + 1 + self.decay_len[onset]


def ground_truth(cfg: SimulationConfig) -> pd.DataFrame:
    """One row per user: id, sign-up date, churn date (NaT if not within the period), traits."""
    latent = _Latent(cfg)
    for _ in latent.days():
        pass
    start = pd.Timestamp(cfg.start)
    churn = latent.churn_day.astype(np.int64)
    churned = churn < cfg.days
    return pd.DataFrame(
        {
            "user_id": [f"u-{i}" for i in range(latent.n)],
            "signup_date": start + pd.to_timedelta(latent.signup_day, unit="D"),
            "churn_date": (start + pd.to_timedelta(np.where(churned, churn, 0), unit="D")).where(
                churned
            ),
            "initial_plan": np.asarray(PLANS)[latent.initial_plan],
            "device": np.asarray(DEVICES)[latent.device],
            "base_engagement": latent.base_engagement,
            "price_sensitivity": latent.price_sensitivity,
        }
    )


def simulate(cfg: SimulationConfig) -> Iterator[dict[str, Any]]:
    """Yield contract-v1 events for the whole population in non-decreasing event time."""
    latent = _Latent(cfg)
    user_ids = [f"u-{i}" for i in range(latent.n)]
    cat_rng = np.random.default_rng([cfg.seed, 2])
    popularity = cat_rng.zipf(1.6, cfg.n_products).astype(float) ** 0.5
    catalog = _Catalog(
        np.cumsum(popularity) / popularity.sum(),
        np.round(cat_rng.lognormal(2.3, 0.8, cfg.n_products), 2),
        [f"p-{i}" for i in range(cfg.n_products)],
    )
    epoch0 = int(datetime.combine(cfg.start, datetime.min.time(), UTC).timestamp() * 1000)
    n = session_base = 0
    for plan in latent.days():
        rng = np.random.default_rng([cfg.seed, 1, plan.day])
        ev = _render_day(plan, latent, catalog, rng, session_base)
        session_base += int(plan.sessions.sum())
        order = np.argsort(ev["time"], kind="stable")
        ms = ev["time"][order] + (epoch0 + plan.day * _DAY_MS)
        times = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms", timezone="UTC")
        amounts = np.round(ev["amount"][order], 2)
        for t, u, ty, s, p, q, a, dv, pl in zip(
            times.tolist(),
            ev["user"][order].tolist(),
            ev["type"][order].tolist(),
            ev["session"][order].tolist(),
            ev["product"][order].tolist(),
            ev["quantity"][order].tolist(),
            amounts.tolist(),
            ev["device"][order].tolist(),
            ev["plan"][order].tolist(),
            strict=True,
        ):
            props: dict[str, Any] = {"device": DEVICES[dv]}
            if s >= 0:
                props["session_id"] = f"s-{s}"
            if p >= 0:
                props["product_id"] = catalog.ids[p]
            if q >= 0:
                props["quantity"] = q
            if a == a:  # not NaN
                props["amount"] = a
                props["currency"] = cfg.currency
            if pl >= 0:
                props["plan"] = PLANS[pl]
            yield {
                "event_id": f"sim-{cfg.seed}-{n}",
                "user_id": user_ids[u],
                "event_type": EVENT_TYPES[ty],
                "event_time": t,
                "schema_version": SCHEMA_VERSION,
                "properties": props,
            }
            n += 1


class _Catalog(NamedTuple):
    cum_popularity: np.ndarray
    price: np.ndarray
    ids: list[str]

    def pick(self, rng: np.random.Generator, sensitivity: np.ndarray) -> np.ndarray:
        """Products by popularity; price-sensitive buyers often take the cheaper of two."""
        k = len(sensitivity)
        a, b = np.searchsorted(self.cum_popularity, rng.random((2, k)) * self.cum_popularity[-1])
        cheaper = np.where(self.price[a] <= self.price[b], a, b)
        return np.where(rng.random(k) < sensitivity, cheaper, a)


# Funnel phases: an event's place in its session is phase + U(0, width), so browsing and
# cart adds interleave, removals follow the adds, and checkout then purchase come last.
_SESSION_TYPES = (
    "session_start",
    "page_view",
    "search",
    "cart_add",
    "cart_remove",
    "checkout",
    "purchase",
)
_PHASE = np.array([0.0, 1.0, 1.0, 1.5, 2.8, 3.0, 3.1])
_WIDTH = np.array([0.0, 2.0, 2.0, 1.3, 0.1, 0.0, 0.0])


def _render_day(
    plan: _DayPlan, pop: _Latent, catalog: _Catalog, rng: np.random.Generator, session_base: int
) -> dict[str, np.ndarray]:
    """Turn one day's latent counts into event columns (time = ms since midnight)."""
    n_s = int(plan.sessions.sum())
    s_user = np.repeat(plan.users, plan.sessions)
    first = np.repeat(np.cumsum(plan.sessions) - plan.sessions, plan.sessions)
    buys = (np.arange(n_s) - first) < np.repeat(plan.purchases, plan.sessions)
    s_eng = np.repeat(plan.engagement, plan.sessions)
    s_sens = pop.price_sensitivity[s_user]
    # Sessions mostly on the user's own device; weekends pull some onto phones.
    weekend = (pop.cfg.start + timedelta(days=plan.day)).weekday() >= 5
    s_device = np.where(
        rng.random(n_s) < (0.25 if weekend else 0.1),
        rng.choice(len(DEVICES), n_s, p=[0.3, 0.35, 0.3, 0.05]),
        pop.device[s_user],
    )

    n_add = np.where(buys, 1 + rng.poisson(1.2, n_s), rng.poisson(0.35, n_s))
    n_remove = rng.binomial(n_add - buys, 0.2)
    kept = n_add - n_remove
    checkout = buys | ((kept > 0) & (rng.random(n_s) < 0.3))  # some abandon at checkout
    counts = [
        np.ones(n_s, dtype=np.int64),
        1 + rng.poisson(2.5 * (0.5 + 0.5 * s_eng)),
        rng.poisson(0.8, n_s),
        n_add,
        n_remove,
        checkout.astype(np.int64),
        buys.astype(np.int64),
    ]
    sess = np.concatenate([np.repeat(np.arange(n_s), c) for c in counts])
    etype = np.concatenate(
        [np.full(c.sum(), _T[t], np.int8) for t, c in zip(_SESSION_TYPES, counts, strict=True)]
    )
    slot = np.concatenate([np.full(c.sum(), i) for i, c in enumerate(counts)])
    n_e = len(sess)
    product = np.full(n_e, -1, dtype=np.int64)
    quantity = np.full(n_e, -1, dtype=np.int64)
    amount = np.full(n_e, np.nan)

    pv = slot == 1
    product[pv] = catalog.pick(rng, s_sens[sess[pv]])
    adds, removes = np.flatnonzero(slot == 3), np.flatnonzero(slot == 4)
    product[adds] = catalog.pick(rng, s_sens[sess[adds]])
    quantity[adds] = 1 + rng.poisson(0.4, len(adds))
    # Each removal takes back a distinct earlier add of the same session.
    add_first = np.cumsum(n_add) - n_add
    r_sess = sess[removes]
    r_rank = np.arange(len(removes)) - np.repeat(np.cumsum(n_remove) - n_remove, n_remove)
    offset = rng.integers(0, np.maximum(n_add, 1))[r_sess]
    taken = adds[add_first[r_sess] + (offset + r_rank) % n_add[r_sess]]
    product[removes], quantity[removes] = product[taken], quantity[taken]

    def value(ix: np.ndarray) -> np.ndarray:
        return np.bincount(sess[ix], catalog.price[product[ix]] * quantity[ix], n_s)

    basket = value(adds) - value(removes)
    units = np.bincount(sess[adds], quantity[adds], n_s) - np.bincount(
        r_sess, quantity[removes], n_s
    )
    for s in (5, 6):  # checkout and purchase carry the basket
        ix = slot == s
        amount[ix] = np.maximum(basket[sess[ix]], 0.0)
        quantity[ix] = units[sess[ix]].astype(np.int64)

    # Times: order within session by funnel phase, ~40 s between events, sessions placed
    # by a two-peak daily profile and kept inside the day.
    order = np.lexsort((_PHASE[slot] + rng.random(n_e) * _WIDTH[slot], sess))
    sess, etype, product, quantity, amount = (
        x[order] for x in (sess, etype, product, quantity, amount)
    )
    gaps = rng.exponential(40_000.0, n_e)
    starts = np.cumsum(sum(counts)) - sum(counts)
    gaps[starts] = 0.0
    csum = np.cumsum(gaps)
    offset_ms = csum - csum[starts][sess]
    duration = np.maximum.reduceat(offset_ms, starts) if n_s else np.zeros(0)
    hour = np.where(rng.random(n_s) < 0.35, rng.normal(12.5, 2.5, n_s), rng.normal(20.0, 2.0, n_s))
    # Late-evening sessions wrap into the early hours so the day's end is not a pile-up.
    s_start = np.minimum((hour % 24.0) * 3_600_000.0, _DAY_MS - 1 - duration)
    s_time = (s_start[sess] + offset_ms).astype(np.int64)

    # Events outside sessions: support contacts, refunds, subscription changes.
    sup = np.repeat(plan.users, plan.support)
    ref = np.repeat(plan.users, plan.refunds)
    subs = [plan.sub_start, plan.sub_change, plan.sub_cancel]
    o_user = np.concatenate([sup, ref, *subs])
    o_type = np.concatenate(
        [np.full(len(x), _T[t], np.int8) for x, t in zip(
            [sup, ref, *subs],
            ["support_contact", "refund", "subscription_start", "subscription_change", "subscription_cancel"],
            strict=True,
        )]
    )  # fmt: skip
    n_o = len(o_user)
    o_product = np.full(n_o, -1, dtype=np.int64)
    o_quantity = np.full(n_o, -1, dtype=np.int64)
    o_amount = np.full(n_o, np.nan)
    r = slice(len(sup), len(sup) + len(ref))
    o_product[r] = catalog.pick(rng, pop.price_sensitivity[ref])
    o_quantity[r] = 1
    o_amount[r] = catalog.price[o_product[r]]
    s0 = len(sup) + len(ref)
    # Subscription starts and changes carry the new plan and its monthly price.
    o_plan = np.full(n_o, -1, dtype=np.int64)
    s0, s1 = len(sup) + len(ref), len(sup) + len(ref) + len(plan.sub_start)
    o_plan[s0:s1] = pop.initial_plan[plan.sub_start]
    o_plan[s1 : s1 + len(plan.sub_change)] = plan.sub_change_plan
    o_amount[s0 : s1 + len(plan.sub_change)] = PLAN_PRICES[o_plan[s0 : s1 + len(plan.sub_change)]]
    o_time = rng.integers(6 * 3_600_000, 23 * 3_600_000, n_o)

    return {
        "time": np.concatenate([s_time, o_time]),
        "user": np.concatenate([s_user[sess], o_user]),
        "type": np.concatenate([etype, o_type]),
        "session": np.concatenate([sess + session_base, np.full(n_o, -1)]),
        "product": np.concatenate([product, o_product]),
        "quantity": np.concatenate([quantity, o_quantity]),
        "amount": np.concatenate([amount, o_amount]),
        "device": np.concatenate([s_device[sess], pop.device[o_user]]),
        "plan": np.concatenate([np.full(n_e, -1), o_plan]),
    }
