"""Feature rows -> the float matrix a model reads, rebuilt from the model card alone.

The card records the training encoding (see docs/training.md): ordered ``feature_names``;
numeric and boolean features as float64 (null -> NaN); each categorical feature as the 0-based
index of its value in the card's ``category_levels`` (unseen or null -> NaN, which LightGBM routes
as missing). Serving never imports ``training``; ``tests/unit/test_serving_encoding.py`` checks
this module against the training encoder on the same frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

# Up to this many rows a Python loop over row dicts beats building a Polars query plan.
ROW_LOOP_MAX_ROWS = 8


class CardEncoder:
    """Encodes feature frames for one model; hashable by its layout so models can share it."""

    def __init__(self, feature_names: Sequence[str], category_levels: Mapping[str, Sequence[str]]):
        self.feature_names = tuple(feature_names)
        self.category_levels = {
            k: tuple(v) for k, v in category_levels.items() if k in self.feature_names
        }
        self._codes = {
            name: {level: float(i) for i, level in enumerate(levels)}
            for name, levels in self.category_levels.items()
        }
        self.key = (self.feature_names, tuple(sorted(self.category_levels.items())))

    def encode(self, frame: pl.DataFrame) -> np.ndarray:
        present = set(frame.columns)
        missing = [name for name in self.feature_names if name not in present]
        if missing:
            raise KeyError(f"feature columns missing from the frame to score: {missing}")
        if frame.height <= ROW_LOOP_MAX_ROWS:
            return self.encode_rows(column_rows(frame, self.feature_names))
        return self._encode_frame(frame)

    def encode_rows(self, rows: Sequence[Sequence[object]]) -> np.ndarray:
        """Rows as tuples in feature order (``DataFrame.rows()``)."""
        out = np.empty((len(rows), len(self.feature_names)), dtype=np.float64)
        codes = [self._codes.get(name) for name in self.feature_names]
        for i, row in enumerate(rows):
            out[i] = [_encode_value(value, code) for value, code in zip(row, codes, strict=True)]
        return out

    def _encode_frame(self, frame: pl.DataFrame) -> np.ndarray:
        expressions = []
        for name in self.feature_names:
            if name in self._codes:
                mapping = self._codes[name]
                expression = (
                    pl.col(name)
                    .cast(pl.String)
                    .replace_strict(
                        list(mapping), list(mapping.values()), default=None, return_dtype=pl.Float64
                    )
                )
            else:
                expression = pl.col(name).cast(pl.Float64)
            expressions.append(expression.fill_nan(None).alias(name))
        encoded = frame.lazy().select(expressions).collect(engine="in-memory")
        return encoded.to_numpy(allow_copy=True).astype(np.float64, copy=False)


def column_rows(frame: pl.DataFrame, names: Sequence[str]) -> list[tuple]:
    """Rows of ``frame`` as tuples of the ``names`` columns, read column by column.

    For the few rows of a scoring request this skips a Polars query (``select(...).rows()`` costs
    about 1 ms of planning per call, measured); each column is fetched by name in O(1).
    """
    return list(zip(*(frame.get_column(name).to_list() for name in names), strict=True))


def _encode_value(value: object, codes: dict[str, float] | None) -> float:
    if value is None:
        return math.nan
    if codes is not None:
        return codes.get(str(value), math.nan)
    return float(value)  # type: ignore[arg-type]
