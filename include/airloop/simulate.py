"""A seeded, deterministic simulator of a subscription business whose customers may churn.

Each simulated day writes one landing batch: a snapshot of a sample of customers (tenure,
charges, usage, support calls, payment failures, plan, region) with the label ``churned``
(the customer left within 30 days of the snapshot). Named scenarios inject the trouble a real
pipeline meets: covariate shift, concept drift, schema break, missing-value burst, duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from airloop import lake
from airloop.config import Settings
from airloop.storage import atomic_path

SCENARIOS = (
    "covariate_shift",
    "concept_drift",
    "schema_break",
    "missing_burst",
    "duplicates",
    "gradual_drift",
    "weekly_seasonality",
)
# a weekly rhythm with no drift: usage peaks at the weekend, support calls and payment failures on Monday
WEEKDAY_USAGE = np.array([0.8, 0.85, 0.9, 0.95, 1.1, 1.6, 1.7])
WEEKDAY_EXTRA_CALLS = np.array([1.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0])
PLANS = np.array(["basic", "standard", "premium"])
REGIONS = np.array(["north", "south", "east", "west"])


@dataclass(frozen=True)
class Scenario:
    """A named scenario active from ``start`` to ``end`` (inclusive; open-ended when None)."""

    name: str
    start: date
    end: date | None = None

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """Parse ``name@START[:END]``, e.g. ``covariate_shift@2026-01-09``."""
        name, _, when = text.partition("@")
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
        if not when:
            raise ValueError(f"scenario {text!r} needs a start date: {name}@YYYY-MM-DD[:YYYY-MM-DD]")
        start, _, end = when.partition(":")
        return cls(name, date.fromisoformat(start), date.fromisoformat(end) if end else None)

    def active(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)


def _customers(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 0])
    return pd.DataFrame(
        {
            "customer_id": np.arange(1000, 1000 + n, dtype="int64"),
            "tenure0": rng.integers(0, 72, n),
            "base_charges": rng.gamma(6.0, 11.0, n),
            "base_usage": rng.gamma(4.0, 6.0, n),
            "risk": rng.normal(0.0, 1.0, n),
            "plan": rng.choice(PLANS, n, p=[0.5, 0.35, 0.15]),
            "region": rng.choice(REGIONS, n),
        }
    )


def simulate_day(day: date, settings: Settings, scenarios: list[Scenario] = ()) -> pd.DataFrame:
    """The landing batch of one day for the configured dataset spec (same inputs, same rows)."""
    business = BUSINESSES.get(settings.spec.name)
    if business is None:
        raise ValueError(f"no simulator for dataset {settings.spec.name!r}; simulators: {sorted(BUSINESSES)}")
    return business(day, settings, {s.name: (day - s.start).days for s in scenarios if s.active(day)})


def _churn_day(day: date, settings: Settings, active: dict[str, int]) -> pd.DataFrame:
    """``active``: the scenarios active on ``day``, with the days since each one began."""
    """Subscription churn: a snapshot of a sample of customers, label ``churned``."""
    rng = np.random.default_rng([settings.seed, day.toordinal()])
    pop = _customers(settings.seed, settings.customers)
    n = min(settings.rows_per_day, len(pop))
    c = pop.iloc[np.sort(rng.choice(len(pop), n, replace=False))].reset_index(drop=True)

    days_in = (day - date(2026, 1, 1)).days
    tenure = np.clip(c["tenure0"].to_numpy() + days_in // 30, 0, 240)
    charges = c["base_charges"].to_numpy() * rng.normal(1.0, 0.03, n)
    usage = c["base_usage"].to_numpy() * rng.lognormal(0.0, 0.25, n)
    calls = rng.poisson(np.exp(0.3 + 0.5 * c["risk"].to_numpy().clip(-2, 2)))
    failures = rng.poisson(np.exp(-1.2 + 0.6 * c["risk"].to_numpy().clip(-2, 2)))
    if "covariate_shift" in active:  # a price rise and a worse product: charges up, usage down
        charges = charges * 1.45
        usage = usage * 0.45
        calls = calls + rng.poisson(2.0, n)
    if "gradual_drift" in active:  # prices creep up 1 % a day, usage down 1 % a day
        charges = charges * (1 + 0.01 * active["gradual_drift"])
        usage = usage * (1 - 0.01 * min(active["gradual_drift"], 60))
    if "weekly_seasonality" in active:
        usage = usage * WEEKDAY_USAGE[day.weekday()]
        calls = calls + rng.poisson(WEEKDAY_EXTRA_CALLS[day.weekday()], n)
        failures = failures + rng.poisson(WEEKDAY_EXTRA_CALLS[day.weekday()], n)

    plan = c["plan"].to_numpy()
    logit = (
        -1.6
        + 0.55 * failures
        + 0.25 * calls
        - 0.06 * usage
        + 0.012 * (charges - 66)
        - 0.03 * tenure
        + np.where(plan == "premium", -0.6, 0.0)
    )
    if "concept_drift" in active:  # a competitor poaches premium, heavy users: the rules change
        logit = logit + 0.12 * usage + np.where(plan == "premium", 2.2, 0.0) - 0.25 * calls
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")

    seconds = np.sort(rng.integers(0, 86_400, n))
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    df = pd.DataFrame(
        {
            "customer_id": c["customer_id"].to_numpy(),
            "event_timestamp": [midnight + timedelta(0, int(s)) for s in seconds],
            "tenure_months": tenure.astype("int64"),
            "monthly_charges": np.round(charges, 2),
            "usage_hours_7d": np.round(np.clip(usage, 0, 168), 2),
            "support_calls_30d": np.clip(calls, 0, 60).astype("int64"),
            "payment_failures_90d": np.clip(failures, 0, 12).astype("int64"),
            "plan": plan,
            "region": c["region"].to_numpy(),
            "churned": churned,
        }
    )
    if "missing_burst" in active:
        df.loc[rng.random(n) < 0.4, "usage_hours_7d"] = np.nan
        df.loc[rng.random(n) < 0.3, "region"] = None
    if "duplicates" in active:
        df = pd.concat([df, df.sample(frac=0.1, random_state=int(rng.integers(1 << 31)))])
        df = df.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    if "schema_break" in active:  # an upstream release renamed a column and changed a type
        df = df.rename(columns={"monthly_charges": "monthly_charge"})
        df["tenure_months"] = df["tenure_months"].astype(str) + " months"
    return df


def _demand_day(day: date, settings: Settings, active: dict[str, int]) -> pd.DataFrame:
    """Store demand (regression): units sold per store and day from price, promotion, weather and footfall."""
    unsupported = set(active) - {"covariate_shift", "concept_drift"}
    if unsupported:
        raise ValueError(f"the store_demand simulator has no scenario {sorted(unsupported)}")
    base = np.random.default_rng([settings.seed, 2])
    n_stores = settings.customers
    base_price = base.uniform(5, 40, n_stores)
    base_footfall = base.gamma(4.0, 400.0, n_stores)
    fmt = base.choice(["express", "supermarket", "hyper"], n_stores, p=[0.4, 0.4, 0.2])
    rng = np.random.default_rng([settings.seed, day.toordinal()])
    n = min(settings.rows_per_day, n_stores)
    idx = np.sort(rng.choice(n_stores, n, replace=False))
    promo = (rng.random(n) < 0.2).astype("int64")
    price = base_price[idx] * (1 - 0.2 * promo) * rng.normal(1.0, 0.02, n)
    temperature = 8 + 10 * np.sin(day.toordinal() / 58.0) + rng.normal(0, 3, n)
    footfall = base_footfall[idx] * rng.lognormal(0, 0.15, n)
    if "covariate_shift" in active:  # a road closure and a price rise
        footfall, price = footfall * 0.55, price * 1.3
    lift = 0.0 if "concept_drift" in active else 0.8
    mean = 0.05 * footfall * (1 + lift * promo) * np.exp(-0.02 * (price - 20)) * np.where(fmt[idx] == "hyper", 1.5, 1.0)
    units = np.clip(mean + rng.normal(0, 0.1 * mean + 1), 0, None)
    seconds = np.sort(rng.integers(0, 86_400, n))
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return pd.DataFrame(
        {
            "store_id": (idx + 1).astype("int64"),
            "event_timestamp": [midnight + timedelta(0, int(s)) for s in seconds],
            "price": np.round(np.clip(price, 0, 100), 2),
            "promo": promo,
            "temperature_c": np.round(temperature, 1),
            "footfall": np.clip(footfall, 0, 100_000).astype("int64"),
            "store_format": fmt[idx],
            "units_sold": np.round(units, 1),
        }
    )


BUSINESSES = {"subscription_churn": _churn_day, "store_demand": _demand_day}


def write_landing(day: date, settings: Settings, scenarios: list[Scenario] = ()) -> Path:
    """Write one day's batch as CSV into the landing folder (atomically); return its path. The
    outcomes of the day's rows (entity, timestamp, label) land separately ``label_delay_days`` later
    in ``landing/labels/``, as they would from a CRM: the monitor's performance check reads only those."""
    target = lake.landing(settings, day.isoformat()) / "batch.csv"
    df = simulate_day(day, settings, scenarios)
    with atomic_path(target) as tmp:
        df.to_csv(tmp, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    spec = settings.spec
    arrival = day + timedelta(days=settings.label_delay_days)
    labels = lake.label_landing(settings, arrival.isoformat()) / f"labels_{day.isoformat()}.csv"
    with atomic_path(labels) as tmp:
        df[[spec.entity, spec.timestamp, spec.label]].to_csv(tmp, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    return target


def simulate(start: date, days: int, settings: Settings, scenarios: list[Scenario] = ()) -> list[Path]:
    """Write ``days`` consecutive landing batches starting at ``start``."""
    return [write_landing(start + timedelta(days=i), settings, scenarios) for i in range(days)]
