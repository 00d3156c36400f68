from datetime import date

import pandas as pd
import pytest

from airloop.simulate import Scenario, simulate_day


def test_same_seed_same_batch(settings):
    a = simulate_day(date(2026, 1, 5), settings)
    b = simulate_day(date(2026, 1, 5), settings)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == settings.spec.columns
    assert not a.equals(simulate_day(date(2026, 1, 6), settings))


def test_covariate_shift_moves_features_not_schema(settings):
    day = date(2026, 1, 5)
    base = simulate_day(day, settings)
    shifted = simulate_day(day, settings, [Scenario.parse("covariate_shift@2026-01-05")])
    assert list(shifted.columns) == list(base.columns)
    assert shifted["monthly_charges"].mean() > 1.3 * base["monthly_charges"].mean()
    assert shifted["usage_hours_7d"].mean() < 0.6 * base["usage_hours_7d"].mean()


def test_scenarios_break_what_they_say(settings):
    day = date(2026, 1, 5)
    broken = simulate_day(day, settings, [Scenario.parse("schema_break@2026-01-05:2026-01-05")])
    assert "monthly_charges" not in broken and "monthly_charge" in broken
    dup = simulate_day(day, settings, [Scenario.parse("duplicates@2026-01-01")])
    assert dup.duplicated(["customer_id", "event_timestamp"]).sum() > 0
    missing = simulate_day(day, settings, [Scenario.parse("missing_burst@2026-01-01")])
    assert missing["usage_hours_7d"].isna().mean() > 0.2
    # a scenario outside its window changes nothing
    assert simulate_day(day, settings, [Scenario.parse("covariate_shift@2026-02-01")]).equals(
        simulate_day(day, settings)
    )


def test_unknown_scenario_is_refused():
    with pytest.raises(ValueError, match="unknown scenario 'drifty'"):
        Scenario.parse("drifty@2026-01-01")
    with pytest.raises(ValueError, match="needs a start date"):
        Scenario.parse("covariate_shift")
