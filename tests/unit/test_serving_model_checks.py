"""What the service refuses to load, and why: checked before anything can take a worker down."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from features.errors import CTOError
from features.registry import FEATURE_SET
from serving.models import check_feature_set, check_model_file, check_tracking_store


@pytest.fixture
def model_file(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 4)), rng.integers(0, 2, 200)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 4, "verbosity": -1, "num_threads": 1},
        lgb.Dataset(x, y),
        num_boost_round=5,
    )
    path = tmp_path / "model.lgb"
    booster.save_model(str(path))
    return path


def test_a_whole_model_file_passes_and_a_truncated_one_is_refused(model_file):
    check_model_file("m v1", model_file)
    text = model_file.read_text()
    for cut in (len(text) // 3, len(text) // 2, text.index("end of trees") - 5):
        model_file.write_text(text[:cut])
        # LightGBM itself would abort the process (std::terminate) on some of these.
        with pytest.raises(CTOError, match="m v1: model file truncated or corrupt"):
            check_model_file("m v1", model_file)


def _card(**feature_set) -> dict:
    declared = {
        "name": FEATURE_SET.name,
        "version": FEATURE_SET.version,
        "digest": FEATURE_SET.digest,
    }
    return {"feature_set": declared | feature_set, "feature_names": ["channel", "intent"]}


def test_a_model_of_another_feature_set_is_refused_naming_both():
    check_feature_set("m v1", _card())
    with pytest.raises(CTOError, match=r"v0\.9\.0 .*digest 0000.*this service computes"):
        check_feature_set("m v1", _card(version="0.9.0", digest="0000"))
    unknown = _card() | {"feature_names": ["channel", "not_a_feature"]}
    with pytest.raises(CTOError, match="not_a_feature"):
        check_feature_set("m v1", unknown)


def test_a_tracking_uri_naming_a_missing_file_fails_instead_of_creating_it(tmp_path):
    missing = tmp_path / "typo" / "mlflow.db"
    with pytest.raises(CTOError, match="does not exist"):
        check_tracking_store(f"sqlite:///{missing}")
    assert not missing.exists()
    existing = tmp_path / "mlflow.db"
    existing.write_bytes(b"")
    check_tracking_store(f"sqlite:///{existing}")
    check_tracking_store("postgresql://host/db")  # a server: checked when first used
