"""LightGBM parameters and fitting, shared by every task.

Model size is chosen with explanation cost in mind: serving explains every score with
TreeSHAP (``pred_contrib=True``), whose cost per row grows with trees x leaves x depth^2.
Depth 5 with 15 leaves and 100 rows per leaf was also the *more accurate* choice on the
simulated data (test ROC-AUC 0.6775 against 0.6707 for depth 6 / 31 leaves / 40 rows on the 40k
fixture: the planted effects are additive in log-odds with few interactions), and keeps SHAP
well under a millisecond per row (docs/training.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np

from features.encoding import FeatureEncoding
from features.settings import Settings

MAX_ROUNDS = 600
EARLY_STOPPING_ROUNDS = 40


@dataclass(frozen=True)
class ModelSize:
    num_leaves: int = 15
    max_depth: int = 5
    min_data_in_leaf: int = 100
    learning_rate: float = 0.05


DEFAULT_SIZE = ModelSize()


def base_params(settings: Settings, size: ModelSize = DEFAULT_SIZE) -> dict[str, object]:
    return {
        "num_threads": settings.num_threads,
        "seed": settings.seed,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
        "learning_rate": size.learning_rate,
        "num_leaves": size.num_leaves,
        "max_depth": size.max_depth,
        "min_data_in_leaf": size.min_data_in_leaf,
        "feature_fraction": 0.9,
        "feature_fraction_seed": settings.seed,
        "lambda_l2": 1.0,
        # Categorical splits: smoothing and a minimum per category keep rare levels from overfitting.
        "cat_smooth": 10.0,
        "min_data_per_group": 50,
        "max_cat_to_onehot": 8,
    }


def monotone_vector(encoding: FeatureEncoding, hints: dict[str, int]) -> list[int]:
    """LightGBM's monotone_constraints in feature order (0 where the direction is unknown)."""
    return [int(hints.get(name, 0)) for name in encoding.feature_names]


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    encoding: FeatureEncoding,
    weight: np.ndarray | None = None,
    reference: lgb.Dataset | None = None,
) -> lgb.Dataset:
    return lgb.Dataset(
        x,
        label=y,
        weight=weight,
        feature_name=list(encoding.feature_names),
        categorical_feature=list(encoding.categorical_features) or "auto",
        reference=reference,
        free_raw_data=False,
        params={"max_bin": 255, "verbosity": -1},
    )


def fit_booster(
    params: dict[str, object],
    train: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    valid: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None,
    encoding: FeatureEncoding,
    max_rounds: int = MAX_ROUNDS,
) -> lgb.Booster:
    """Train with early stopping on the validation window (no early stopping without one).

    Inside :func:`training.distributed.use_dask` the booster is trained on the Dask cluster.
    """
    from features.settings import get_settings
    from training.distributed import active_client, fit_booster_dask

    max_rounds = min(max_rounds, get_settings().max_rounds)  # CTO_MAX_ROUNDS caps every fit
    client = active_client()
    if client is not None:
        return fit_booster_dask(
            client,
            params,
            train,
            valid,
            encoding,
            max_rounds=max_rounds,
            patience=EARLY_STOPPING_ROUNDS,
        )
    x_train, y_train, w_train = train
    train_set = make_dataset(x_train, y_train, encoding, w_train)
    callbacks = []
    valid_sets = []
    if valid is not None and len(valid[1]) > 0:
        x_valid, y_valid, w_valid = valid
        valid_sets = [make_dataset(x_valid, y_valid, encoding, w_valid, reference=train_set)]
        callbacks.append(lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False))
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=max_rounds,
        valid_sets=valid_sets or None,
        callbacks=callbacks,
    )
    if booster.best_iteration and booster.best_iteration > 0:
        # Keep only the trees early stopping chose: smaller model, cheaper SHAP in serving.
        booster = lgb.Booster(
            model_str=booster.model_to_string(num_iteration=booster.best_iteration)
        )
    return booster


def model_shape(booster: lgb.Booster) -> dict[str, float]:
    """Trees, total and mean leaves, and the deepest path: the drivers of TreeSHAP cost."""
    dump = booster.dump_model()
    leaves: list[int] = []
    depths: list[int] = []
    for tree in dump["tree_info"]:
        leaves.append(int(tree["num_leaves"]))
        depths.append(_depth(tree["tree_structure"]))
    return {
        "trees": float(len(leaves)),
        "leaves_total": float(sum(leaves)),
        "leaves_mean": float(np.mean(leaves)) if leaves else 0.0,
        "depth_max": float(max(depths)) if depths else 0.0,
        "depth_mean": float(np.mean(depths)) if depths else 0.0,
    }


def _depth(node: dict) -> int:
    # Iterative: a deep tree must not hit Python's recursion limit.
    deepest = 0
    stack = [(node, 0)]
    while stack:
        current, depth = stack.pop()
        if "leaf_index" in current or "left_child" not in current:
            deepest = max(deepest, depth)
            continue
        stack.append((current["left_child"], depth + 1))
        stack.append((current["right_child"], depth + 1))
    return deepest
