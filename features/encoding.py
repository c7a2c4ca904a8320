"""Feature rows -> the float matrix LightGBM reads: one encoding for training and serving.

The encoding is fixed at training time (:func:`fit_encoding`) and written into the model card, so
the service rebuilds the exact matrix from the card alone (:class:`CardEncoder`):

- numeric and boolean features: float64 (True -> 1.0, False -> 0.0, null -> NaN);
- categorical features: the 0-based index of the value in the card's ``category_levels``
  for that feature, as float; a value not among the levels (unseen at training) or null
  becomes NaN, which LightGBM routes as missing instead of failing.

:class:`FeatureEncoding` encodes whole frames (training, batch scoring);
:class:`CardEncoder` encodes the few rows of a request, or a feature dict, without a Polars plan.
``tests/unit/test_serving_encoding.py`` checks both give the same matrix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from features.errors import CTOError


@dataclass(frozen=True)
class FeatureEncoding:
    """Ordered feature names plus the category levels of each categorical feature."""

    feature_names: tuple[str, ...]
    category_levels: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def categorical_features(self) -> tuple[str, ...]:
        return tuple(name for name in self.feature_names if name in self.category_levels)

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, name in enumerate(self.feature_names) if name in self.category_levels]

    def to_dict(self) -> dict[str, object]:
        return {
            "feature_names": list(self.feature_names),
            "categorical_features": list(self.categorical_features),
            "category_levels": {k: list(v) for k, v in self.category_levels.items()},
        }

    @classmethod
    def from_dict(cls, card: dict) -> FeatureEncoding:
        return cls(
            feature_names=tuple(card["feature_names"]),
            category_levels={k: tuple(v) for k, v in card["category_levels"].items()},
        )


def _levels_of(series: pl.Series) -> tuple[str, ...]:
    """Levels of a categorical column as seen in the training rows (Enum: the declared order)."""
    if isinstance(series.dtype, pl.Enum):
        return tuple(series.dtype.categories.to_list())
    values = series.drop_nulls().cast(pl.String).unique().sort()
    return tuple(values.to_list())


def fit_encoding(
    frame: pl.DataFrame, feature_names: list[str], categorical: list[str] | tuple[str, ...]
) -> FeatureEncoding:
    """Fix the feature order and the category levels from the training rows.

    String columns not declared categorical are treated as categorical too: a raw string
    cannot be a LightGBM input, and silently dropping a feature would hide a mistake.
    """
    missing = [name for name in feature_names if name not in frame.columns]
    if missing:
        raise CTOError(f"feature columns missing from the training frame: {missing}")
    levels: dict[str, tuple[str, ...]] = {}
    for name in feature_names:
        dtype = frame.schema[name]
        is_text = dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
        if name in categorical or is_text:
            levels[name] = _levels_of(frame.get_column(name))
    return FeatureEncoding(tuple(feature_names), levels)


def encode_expressions(encoding: FeatureEncoding, schema: pl.Schema | None = None) -> list[pl.Expr]:
    """One float64 expression per feature, in the encoding's order (``schema``: the frame's, to
    read an Enum whose categories are the levels by its codes)."""
    exprs: list[pl.Expr] = []
    for name in encoding.feature_names:
        dtype = schema.get(name) if schema is not None else None
        if (
            isinstance(dtype, pl.Enum)
            and name in encoding.category_levels
            and tuple(dtype.categories.to_list()) == tuple(encoding.category_levels[name])
        ):
            # An Enum's codes are its categories' positions, the levels' codes here: no round
            # trip through strings (a third of the encoding's cost in batch scoring, measured).
            expr = pl.col(name).to_physical().cast(pl.Float64)
        elif name in encoding.category_levels:
            levels = list(encoding.category_levels[name])
            mapping = pl.DataFrame(
                {"level": levels, "code": np.arange(len(levels), dtype=np.float64)}
            )
            # replace_strict with a default maps unseen and null values to missing (NaN later).
            expr = (
                pl.col(name)
                .cast(pl.String)
                .replace_strict(
                    mapping["level"], mapping["code"], default=None, return_dtype=pl.Float64
                )
            )
        else:
            expr = pl.col(name).cast(pl.Float64)
        exprs.append(expr.fill_nan(None).alias(name))
    return exprs


def encode(frame: pl.DataFrame | pl.LazyFrame, encoding: FeatureEncoding) -> np.ndarray:
    """The float64 matrix (rows x features) in the encoding's order; nulls become NaN."""
    lazy = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
    schema = lazy.collect_schema()
    missing = [name for name in encoding.feature_names if name not in schema]
    if missing:
        raise CTOError(f"feature columns missing from the frame to score: {missing}")
    encoded = lazy.select(encode_expressions(encoding, schema)).collect(engine="in-memory")
    return encoded.to_numpy(allow_copy=True).astype(np.float64, copy=False)


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
        self.encoding = FeatureEncoding(self.feature_names, self.category_levels)

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
        return encode(frame, self.encoding)


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
