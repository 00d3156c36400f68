"""A dataset airloop did not generate, written the way a user's export would look: hourly records of one
bike-sharing station (24 rows a day), integer-coded categories, dates in 2011, column names of its own, and
the outcome ("busy") delivered as a separate label feed two days later. Not the simulator: plain numpy."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

START = date(2011, 1, 3)


def day_rows(day: date, station: int | str = 7, seed: int = 11) -> pd.DataFrame:
    """One day's 24 hourly rows; ``busy`` depends on hour, working day, weather and temperature."""
    rng = np.random.default_rng([seed, day.toordinal()])
    hours = np.arange(24)
    season = (day.month % 12) // 3 + 1
    weekday = day.isoweekday() % 7  # 0 = Sunday, as in the UCI export
    workingday = int(weekday not in (0, 6))
    weather = rng.choice([1, 2, 3], size=24, p=[0.65, 0.28, 0.07])
    temp = np.clip(0.3 + 0.25 * np.sin((day.timetuple().tm_yday - 100) / 58) + rng.normal(0, 0.05, 24), 0.02, 0.98)
    hum = np.clip(rng.normal(0.6, 0.15, 24), 0.05, 1.0)
    wind = np.clip(rng.gamma(2.0, 0.08, 24), 0.0, 0.85)
    rush = np.isin(hours, [7, 8, 9, 17, 18, 19]) * workingday + np.isin(hours, [11, 12, 13, 14, 15]) * (1 - workingday)
    logit = -1.2 + 2.2 * rush + 2.0 * temp - 0.9 * (weather - 1) - 1.5 * (hours < 6)
    busy = (rng.random(24) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "station": station,
            "dteday": [f"{day.isoformat()}T{h:02d}:00:00Z" for h in hours],
            "season": season,
            "hr": hours,
            "weekday": weekday,
            "workingday": workingday,
            "weathersit": weather,
            "temp": np.round(temp, 4),
            "hum": np.round(hum, 4),
            "windspeed": np.round(wind, 4),
            "busy": busy,
        }
    )


def write_days(landing: Path, days: int, station: int | str = 7, label_delay: int = 2) -> list[date]:
    """Each day's batch as ``landing/ds=<day>/export.csv`` and its labels as
    ``landing/labels/ds=<day + label_delay>/busy_<day>.csv``."""
    out = []
    for i in range(days):
        day = START + timedelta(days=i)
        rows = day_rows(day, station)
        folder = landing / f"ds={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        rows.to_csv(folder / "export.csv", index=False)
        arrival = landing / "labels" / f"ds={(day + timedelta(days=label_delay)).isoformat()}"
        arrival.mkdir(parents=True, exist_ok=True)
        rows[["station", "dteday", "busy"]].to_csv(arrival / f"busy_{day.isoformat()}.csv", index=False)
        out.append(day)
    return out
