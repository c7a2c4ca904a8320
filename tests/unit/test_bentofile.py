"""The Bento's runtime pins are the project's runtime pins (pyproject.toml [project])."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_bentofile_packages_equal_the_runtime_dependencies():
    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert sorted(bentofile["python"]["packages"]) == sorted(project["dependencies"])
    assert bentofile["service"] == "serving.service:CTOService"
    for pattern in bentofile["include"]:
        assert list(REPO.glob(pattern)), pattern
