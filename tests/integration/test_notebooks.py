"""Both notebooks run top to bottom on small data (nbclient, a real kernel) and are committed clean."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPLORE = NOTEBOOKS / "01-explore-contact-to-order.ipynb"
RETRAIN = NOTEBOOKS / "02-retrain-and-promote.ipynb"
SMALL_CONTACTS = 5_000
SEED = 7
TASKS = ("conversion-arrival", "conversion-after-contact", "dropoff-reason", "contacts-to-order")


def execute(path: Path) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel from the notebooks directory; raises on any cell error."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=1800,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return notebook


def stdout_of(cell) -> str:
    return "".join(
        o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"
    )


def last_json(notebook) -> dict:
    """The JSON summary the last code cell prints."""
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    return json.loads(stdout_of(code_cells[-1]).strip().splitlines()[-1])


def images(notebook) -> int:
    return sum(
        1
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    )


@pytest.fixture
def small_env(monkeypatch, tmp_path) -> Path:
    """CTO_* settings for the kernel: an empty data dir (the notebooks simulate), a temp MLflow store."""
    monkeypatch.setenv("CTO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CTO_SIMULATE_CONTACTS", str(SMALL_CONTACTS))
    monkeypatch.setenv("CTO_SEED", str(SEED))
    monkeypatch.setenv("CTO_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CTO_ARTIFACT_LOCATION", str(tmp_path / "mlruns"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return tmp_path


@pytest.mark.parametrize("path", [EXPLORE, RETRAIN], ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell.outputs == [], f"{path.name}: cell {cell.get('id')} has outputs"
        assert cell.execution_count is None


def test_explore_notebook_shows_the_kpis_of_the_data(small_env):
    from features.kpis import kpi_table
    from features.labels import label_contacts
    from features.simulate import simulate

    notebook = execute(EXPLORE)
    summary = last_json(notebook)
    sim = simulate(n_contacts=SMALL_CONTACTS, seed=SEED)
    expected = kpi_table(label_contacts(sim.contacts, sim.orders, 7, 14)).row(0, named=True)
    assert summary["contacts"] == expected["contacts"] == sim.contacts.height
    assert summary["orders"] == expected["orders"]
    for key in ("contact_to_order_ratio", "contacts_per_order", "median_time_to_order_hours"):
        assert summary[key] == pytest.approx(expected[key], rel=1e-9), key
    assert summary["features"] >= 40
    assert images(notebook) >= 3  # weekly trend, breakdowns, feature distributions
    text = "".join(stdout_of(c) for c in notebook.cells if c.cell_type == "code")
    assert f"simulating {SMALL_CONTACTS:,} contacts" in text


def test_retrain_notebook_registers_compares_and_promotes(small_env):
    import mlflow

    first = last_json(execute(RETRAIN))
    # An empty store: every model's first version becomes champion without a contest.
    assert set(first["challengers"]) == set(TASKS)
    assert all(first["promoted"].values())
    assert first["champions"] == first["challengers"]
    assert 0.5 < first["after_contact_test_roc_auc"] <= 1.0
    assert first["champion_roc_auc_on_test_window"] == pytest.approx(
        first["after_contact_test_roc_auc"], abs=1e-9
    )

    # Second run on the same data: new challengers meet the champions; the alias follows the decision.
    second_notebook = execute(RETRAIN)
    second = last_json(second_notebook)
    for task in TASKS:
        assert int(second["challengers"][task]) == int(first["challengers"][task]) + 1
        expected = (
            second["challengers"][task] if second["promoted"][task] else first["champions"][task]
        )
        assert second["champions"][task] == expected
    store = f"sqlite:///{small_env / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    name = "cto-conversion-after-contact"
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    decision_tags = {
        client.get_run(v.run_id).data.tags.get("promotion_decision")
        for v in client.search_model_versions(f"name = '{name}'")
    }
    assert decision_tags <= {"promoted", "kept_champion"} and decision_tags
    assert images(second_notebook) == 0  # this one is tables and numbers
