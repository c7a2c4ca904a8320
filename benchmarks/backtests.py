"""Backtests of the shared real data sets and the simulator, written into docs/training.md.

``python -m benchmarks.backtests [--contacts 40000] [--folds 5]``

Runs ``cto backtest`` (the CLI, as users run it) on:

- the simulator (``cto simulate``: seasonality and a staffing change that lengthens waits);
- UCI online-shoppers, ordered by month. The data set has a month but no year (sessions of one
  year, no January or April), so the run adds ``month_index`` = the calendar month number
  (Feb = 2 ... Dec = 12) as the time column and leaves the ``Month`` text out of the features;
  times are then in months;
- Olist marketing leads by first contact (``cto import olist``, arrival-moment model: the source
  has nothing about the contact itself; a 90-day label horizon, as leads take weeks to close).

Each backtest writes its summary, JSON result and plot under ``docs/img/backtest/``; the script
then rewrites the section of docs/training.md between the BACKTEST markers from those results.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

MONTH_INDEX = {
    "Feb": 2,
    "Mar": 3,
    "May": 5,
    "June": 6,
    "Jul": 7,
    "Aug": 8,
    "Sep": 9,
    "Oct": 10,
    "Nov": 11,
    "Dec": 12,
}


def shoppers_with_month_index(source: Path, target: Path) -> Path:
    """The online-shoppers CSV plus ``month_index`` (calendar month number; no year in the data)."""
    frame = pl.read_csv(source, infer_schema_length=None)
    unknown = sorted(set(frame["Month"].unique().to_list()) - set(MONTH_INDEX))
    if unknown:
        raise ValueError(f"online-shoppers: unexpected Month value(s) {unknown}")
    frame.with_columns(
        pl.col("Month").replace_strict(MONTH_INDEX, return_dtype=pl.Int32).alias("month_index")
    ).write_csv(target)
    return target
