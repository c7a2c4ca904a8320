"""LightGBM on a Dask cluster (``lightgbm.dask``): the same models, trained across workers.

:func:`use_dask` makes every :func:`training.lgbm.fit_booster` call inside it train with
``DaskLGBMClassifier`` (binary and multiclass objectives) or ``DaskLGBMRegressor`` (the rest)
instead of ``lightgbm.train``: the rows are split into one block per worker, each worker builds
its histograms on its block and LightGBM's own network (TCP, one port per worker) merges them.
The result is a plain :class:`lightgbm.Booster`, so calibration, metrics, SHAP, the model card and
MLflow registration are exactly those of a single-machine run.

Early stopping: ``lightgbm.dask`` does not stop early, so the model is trained for the full
round budget with the validation window as ``eval_set`` and then cut at the round the
single-machine rule would have kept (the best validation loss, stopping once it has not improved
for ``EARLY_STOPPING_ROUNDS`` rounds). Data-parallel histograms are not bit-identical to one
machine's (bin boundaries are found per worker block), so metrics agree within a tolerance
(tests/integration/test_dask_training.py states it).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING

import lightgbm as lgb
import numpy as np

if TYPE_CHECKING:
    from distributed import Client

    from features.encoding import FeatureEncoding

_CLIENT: contextvars.ContextVar[Client | None] = contextvars.ContextVar("dask_client", default=None)
# Parameters of lgb.train that the sklearn-style Dask estimators take under other names.
# (Threads per worker come from the worker itself: lightgbm.dask sets them.)
_RENAMED = {"seed": "random_state"}


@contextlib.contextmanager
def use_dask(client: Client) -> Iterator[Client]:
    """Train every booster fitted inside this block on ``client``'s workers."""
    token = _CLIENT.set(client)
    try:
        yield client
    finally:
        _CLIENT.reset(token)


def active_client() -> Client | None:
    return _CLIENT.get()


def _blocks(x: np.ndarray, workers: int):
    import dask.array as da

    rows = max(1, -(-len(x) // workers))  # one block per worker: each trains on its own rows
    return da.from_array(x, chunks=(rows,) + x.shape[1:])


def best_round(history: list[float], patience: int) -> int:
    """The round (1-based) early stopping keeps: lowest loss, stopping after ``patience`` rounds
    without improvement (what ``lightgbm.early_stopping`` does on one machine)."""
    best, best_at = np.inf, 0
    for at, loss in enumerate(history):
        if loss < best:
            best, best_at = loss, at
        elif at - best_at >= patience:
            break
    return best_at + 1


def fit_booster_dask(
    client: Client,
    params: dict[str, object],
    train: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    valid: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None,
    encoding: FeatureEncoding,
    *,
    max_rounds: int,
    patience: int,
) -> lgb.Booster:
    """:func:`training.lgbm.fit_booster` on the cluster (see the module docstring)."""
    from lightgbm.dask import DaskLGBMClassifier, DaskLGBMRegressor

    workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    x_train, y_train, w_train = train
    objective = str(params.get("objective", ""))
    estimator_class = (
        DaskLGBMClassifier if objective in ("binary", "multiclass") else DaskLGBMRegressor
    )
    kwargs = {
        _RENAMED.get(k, k): v for k, v in params.items() if k not in ("metric", "num_threads")
    }
    if objective == "multiclass":
        kwargs.pop("num_class", None)  # the classifier sets it from the labels
    estimator = estimator_class(client=client, n_estimators=max_rounds, **kwargs)
    fit_kwargs: dict[str, object] = {
        "feature_name": list(encoding.feature_names),
        "categorical_feature": list(encoding.categorical_features) or "auto",
    }
    if w_train is not None:
        fit_kwargs["sample_weight"] = _blocks(w_train, workers)
    has_valid = valid is not None and len(valid[1]) > 0
    if has_valid:
        x_valid, y_valid, w_valid = valid  # type: ignore[misc]
        fit_kwargs["eval_X"] = (_blocks(x_valid, workers),)
        fit_kwargs["eval_y"] = (_blocks(y_valid, workers),)
        if w_valid is not None:
            fit_kwargs["eval_sample_weight"] = [_blocks(w_valid, workers)]
        if "metric" in params:
            fit_kwargs["eval_metric"] = params["metric"]
    estimator.fit(_blocks(x_train, workers), _blocks(y_train, workers), **fit_kwargs)
    booster = estimator.to_local().booster_
    if has_valid:
        history = next(iter(estimator.evals_result_.values()))
        losses = (
            history[str(params["metric"])] if "metric" in params else next(iter(history.values()))
        )
        rounds = best_round(list(losses), patience)
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))
    return booster


def _score_partition(part, model, threads: int):
    """p_order of one pandas partition (what ``score_table`` computes for a chunk)."""
    import pandas as pd
    import polars as pl

    from features.encoding import encode
    from training.batch import _binary_probability

    frame = pl.from_pandas(part)
    frame = frame.with_columns(
        pl.col(n).cast(pl.Int8)
        for n in model.card["feature_names"]
        if frame.schema[n] == pl.Boolean
    )
    x = encode(frame, model.encoding)
    return pd.Series(_binary_probability(model, x, threads), index=part.index, name="p_order")


def score_table_dask(client: Client, path: str, model, threads: int) -> np.ndarray:
    """``p_order`` of every row of a Parquet table, in input order, scored on the cluster.

    The table is read by the workers as a Dask DataFrame (one partition per row group) and scored
    with ``map_partitions`` by the registered model, sent once to every worker. Same booster, same
    encoding, same calibration: the scores equal the one-process scores exactly.
    """
    import dask.dataframe as dd

    table = dd.read_parquet(path, split_row_groups=True)
    shared = client.scatter(model, broadcast=True)
    scores = table.map_partitions(_score_partition, shared, threads, meta=("p_order", "f8"))
    return np.concatenate(
        [p.to_numpy() for p in client.gather(client.compute(scores.to_delayed()))]
    )
