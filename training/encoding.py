"""Turn a Polars feature frame into the float matrix LightGBM and the baselines read.

The encoding is fixed at training time and written into the model card, so serving can
rebuild the exact matrix without importing this package:

- numeric and boolean features: float64 (True -> 1.0, False -> 0.0, null -> NaN);
- categorical features: the 0-based index of the value in the card's ``category_levels``
  for that feature, as float; a value not among the levels (unseen at training) or null
  becomes NaN, which LightGBM routes as missing instead of failing.
"""

from __future__ import annotations

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


def encode_expressions(encoding: FeatureEncoding) -> list[pl.Expr]:
    """One float64 expression per feature, in the encoding's order."""
    exprs: list[pl.Expr] = []
    for name in encoding.feature_names:
        if name in encoding.category_levels:
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
    schema_names = lazy.collect_schema().names()
    missing = [name for name in encoding.feature_names if name not in schema_names]
    if missing:
        raise CTOError(f"feature columns missing from the frame to score: {missing}")
    encoded = lazy.select(encode_expressions(encoding)).collect()
    return encoded.to_numpy(allow_copy=True).astype(np.float64, copy=False)


def encoded_frame(frame: pl.DataFrame, encoding: FeatureEncoding) -> pl.DataFrame:
    """The encoded features as a Polars frame (float64 columns), e.g. for an input example."""
    return frame.lazy().select(encode_expressions(encoding)).collect()
