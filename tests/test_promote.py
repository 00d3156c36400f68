from airloop.promote import decide


def test_first_model_needs_only_the_floor(settings):
    assert decide(settings, 0.70, None, False)[0]
    ok, reason = decide(settings, 0.55, None, False)
    assert not ok and "below the floor" in reason and "0.5500" in reason


def test_challenger_must_match_the_champion(settings):
    assert decide(settings, 0.80, 0.80, False)[0]
    ok, reason = decide(settings, 0.79, 0.80, False)
    assert not ok and "0.7900 < champion 0.8000" in reason


def test_backfill_never_promotes(settings):
    ok, reason = decide(settings, 0.99, 0.50, True)
    assert not ok and "backfill" in reason
