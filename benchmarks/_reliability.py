"""Shared set-up of the reliability benchmarks (crash, soak): a trained registry and event rows."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from serving.process import REPO


def trained_registry(tracking_uri: str | None, contacts: int = 20_000, seed: int = 11) -> str:
    """``tracking_uri`` as given, or a fresh registry: simulate ``contacts`` and train (cto)."""
    if tracking_uri:
        return tracking_uri
    root = Path(tempfile.mkdtemp(prefix="cto-bench-registry-"))
    env = {
        "CTO_DATA_DIR": str(root / "data"),
        "CTO_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "CTO_ARTIFACT_LOCATION": str(root / "mlruns"),
        "CTO_SEED": str(seed),
        "CTO_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("CTO_")} | env
    for command in (
        ["simulate", "--contacts", str(contacts), "--quiet"],
        ["train", "--promote", "--quiet"],
    ):
        subprocess.run(
            [sys.executable, "-m", "cto.cli", *command],
            cwd=REPO,
            env=full,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return env["CTO_TRACKING_URI"]


def contact_rows(count: int, customers: int, prefix: str | None = None) -> list[dict]:
    """``count`` ended contacts with unique ids over ``customers`` customers, dated in the last
    days (inside any clock-skew and retention window)."""
    prefix = prefix or uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        started = now - timedelta(days=3, seconds=(count - i) * 7)
        rows.append(
            {
                "contact_id": f"{prefix}-c{i}",
                "customer_id": f"{prefix}-u{i % customers}",
                "started_at": started.isoformat().replace("+00:00", "Z"),
                "channel": ("phone", "chat", "email")[i % 3],
                "direction": "inbound",
                "intent": ("pricing", "delivery", "technical")[i % 3],
                "handled_by": "agent",
                "agent_id": f"a-{i % 7}",
                "wait_seconds": float(i % 300),
                "handle_seconds": 120.0 + i % 50,
                "transfers": i % 2,
                "abandoned": False,
                "resolved": i % 4 != 0,
                "callback_offered": False,
                "follow_up_sent": i % 3 == 0,
            }
        )
    return rows
