"""The console script and the settings object: wiring, strictness, env prefix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from cto.cli import COMMANDS, build_parser
from features.settings import Settings, get_settings


def test_every_command_is_wired():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def test_settings_read_env_prefix(monkeypatch):
    monkeypatch.setenv("CTO_HORIZON_DAYS", "9")
    monkeypatch.setenv("CTO_TRACKING_URI", "sqlite:///elsewhere.db")
    s = get_settings()
    assert s.horizon_days == 9
    assert s.tracking_uri == "sqlite:///elsewhere.db"


def test_settings_are_frozen_and_strict():
    s = get_settings()
    with pytest.raises(ValidationError):
        s.horizon_days = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(horizon_days="seven")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(unknown_setting=1)  # type: ignore[call-arg]


def test_default_tracking_is_sqlite_not_a_bare_file_store():
    s = get_settings()
    assert s.tracking_uri.startswith("sqlite:///")
    assert s.artifact_location == "mlruns"


def test_cli_error_is_one_line_without_traceback(tmp_path):
    missing = tmp_path / "nope"
    proc = subprocess.run(
        [sys.executable, "-m", "cto.cli", "validate", str(missing)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert str(missing) in proc.stderr


def test_blank_api_token_is_refused_not_auth_off():
    for blank in ("", "  "):
        with pytest.raises(ValidationError, match="CTO_API_TOKEN"):
            Settings(api_token=blank)
    assert Settings(api_token=None).api_token is None


def test_empty_api_token_fails_at_start():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTO_")} | {"CTO_API_TOKEN": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "cto.cli", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "api_token" in proc.stderr and "CTO_API_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_fast_port_must_differ_from_the_service_port():
    with pytest.raises(ValidationError, match="CTO_FAST_PORT must differ from CTO_PORT"):
        Settings(port=3000, fast_port=3000)
    assert Settings(port=3000, fast_port=3001).fast_port == 3001
    assert Settings().fast_port is None  # `cto serve` then takes CTO_PORT + 1
    assert Settings(port=3000, fast_port=0).fast_port == 0  # off


def test_the_default_fast_port_is_the_one_after_the_service_port():
    from cto.commands.serve import default_fast_port

    assert default_fast_port(3000) == 3001
    assert default_fast_port(65535) == 65534


def test_cli_keeps_freed_memory_two_seconds_unless_the_user_chose(monkeypatch):
    from cto import cli

    env: dict[str, str] = {}
    monkeypatch.setattr(cli.os, "environ", env)
    with pytest.raises(SystemExit):
        cli.main(["features", "--help"])
    assert env["_RJEM_MALLOC_CONF"] == "dirty_decay_ms:2000,muzzy_decay_ms:2000"
    env["_RJEM_MALLOC_CONF"] = "dirty_decay_ms:100"
    with pytest.raises(SystemExit):
        cli.main(["features", "--help"])
    assert env["_RJEM_MALLOC_CONF"] == "dirty_decay_ms:100"
