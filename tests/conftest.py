"""Shared, session-scoped fixtures: one simulated data set and one trained MLflow store for the suite.

Expensive things are built once and reused by unit, model, integration and report tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# LightGBM's OpenMP threads spin-wait by default: on a busy 2-core machine that turned seconds into
# minutes. Set before any test imports LightGBM (the serving subprocesses inherit it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TEST_SEED = 7
TEST_CONTACTS = 40_000


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (real public data sets)."""
    assert SHARED_DATA.is_dir(), f"expected the shared data sets at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def sim_data():
    """A small simulated data set (features.simulate.SimulatedData)."""
    from features.simulate import simulate

    return simulate(n_contacts=TEST_CONTACTS, seed=TEST_SEED)


@pytest.fixture(scope="session")
def sim_dir(sim_data, tmp_path_factory) -> Path:
    """The simulated tables written as Parquet (contacts, orders, customers, truth)."""
    out = tmp_path_factory.mktemp("sim")
    sim_data.write(out)
    return out


@pytest.fixture(scope="session")
def mlflow_settings(tmp_path_factory):
    """Settings pointing at a fresh, real MLflow store (sqlite tracking, artifacts on disk)."""
    from features.settings import get_settings

    root = tmp_path_factory.mktemp("mlflow")
    return get_settings(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_location=str(root / "mlruns"),
        data_dir=root / "data",
        seed=TEST_SEED,
    )


@pytest.fixture(scope="session")
def trained(sim_dir, mlflow_settings):
    """All models trained on the simulated data, registered and promoted to `champion`."""
    from training.pipeline import run_training

    return run_training(sim_dir, mlflow_settings, promote=True, progress=False)


@pytest.fixture
def isolated_mlflow_uris(monkeypatch):
    """Undo, after the test, what in-process code did to MLflow's process-wide tracking and
    registry URIs (the service's model loader points them at its registry, as a server should):
    later tests must resolve ``models:/`` URIs in their own store, not in this test's."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:  # recorded as absent: removed again afterwards
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)
