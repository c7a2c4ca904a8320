"""One frozen, strict settings object for every part of the service (env prefix ``CTO_``).

Read it with :func:`get_settings` when it is needed; nothing here runs at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CTO_", frozen=True, strict=True, extra="forbid")

    # Labels
    horizon_days: int = Field(
        7, ge=1, description="A contact converts if an order follows within H days."
    )
    journey_gap_days: int = Field(14, ge=1, description="A gap this long ends a journey.")

    # Data
    data_dir: Path = Field(Path("data"), description="Where simulated / imported tables live.")
    seed: int = Field(42, description="Seed for simulation and training.")
    simulate_contacts: int = Field(200_000, ge=100, description="Default simulated contact count.")

    # MLflow
    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI.")
    artifact_location: str = Field("mlruns", description="Artifact root for new experiments.")
    experiment: str = Field("cto", description="MLflow experiment name.")
    model_prefix: str = Field("cto", description="Registered model names start with this prefix.")
    champion_alias: str = Field("champion", description="Registry alias the service loads.")
    num_threads: int = Field(2, ge=1, description="LightGBM threads (always set: see stack notes).")
    max_rounds: int = Field(
        600,
        ge=1,
        description="Boosting rounds per LightGBM model at most. Early stopping on the validation "
        "window usually ends sooner; on Dask (which cannot stop early) every round is trained and "
        "the model is cut at the round early stopping would keep, so a lower cap saves time there.",
    )
    promotion_margin: float = Field(
        0.0,
        ge=0.0,
        description="A challenger is promoted only if the lower end of the 95% bootstrap CI of its "
        "gain over the champion (primary metric, same window) is above this.",
    )

    # Serving
    host: str = Field("127.0.0.1", description="Address the service binds to.")
    port: int = Field(3000, ge=1, le=65535, description="Port the service binds to.")
    fast_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the lean scoring server each worker runs beside the service "
        "(POST /score, /score_batch without BentoML's per-request middleware). Unset: `cto serve` "
        "uses CTO_PORT + 1 (a bare `bentoml serve` none); 0: off.",
    )
    api_token: str | None = Field(
        None,
        description="Bearer token; when set, requests need it. Unset runs without auth; an empty or "
        "blank value is an error (a template that forgot to fill it in must not open the API).",
    )
    event_store_url: str = Field(
        "sqlite:///events.db", description="Event store: a SQLite file or a database server URL."
    )
    history_days: int = Field(120, ge=1, description="Bounded history window kept per customer.")
    workers: int = Field(1, ge=1, description="Service worker processes.")
    max_clock_skew_seconds: float = Field(
        300.0,
        ge=0,
        description="/events rejects rows dated later than the server's clock plus this.",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted; larger ones get 413 before they are parsed.",
    )
    # Next action: act only where a decision's expected gain beats its cost (serving.rules).
    order_value: float = Field(
        1.0,
        gt=0,
        description="Value of one order, in the unit of the action costs (1: costs in orders). "
        "A follow-up or callback is recommended only where uplift x order_value beats its cost.",
    )
    follow_up_cost: float = Field(
        0.01, ge=0, description="Cost of sending a follow-up, in the unit of order_value."
    )
    callback_cost: float = Field(
        0.02, ge=0, description="Cost of a callback, in the unit of order_value."
    )
    gc_tuning: bool = Field(
        True,
        description="After a model set loads, collect once and freeze the heap (serving.heap): "
        "later collections never walk the models again; false only to measure what that changes.",
    )
    model_poll_seconds: float = Field(
        30.0, gt=0, description="How often the service checks the registry for a new champion."
    )
    allow_other_data: bool = Field(
        False,
        description="Serve a champion trained on data other than the contract this service serves "
        "(a --table model, another schema): loaded with a WARNING and named in every answer "
        "(models[].data_mismatch) instead of refused.",
    )

    # Scale-out
    dask: str | None = Field(
        None,
        description="Run batch commands on Dask: a scheduler address (tcp://host:8786) or "
        "local:N (a local cluster of N worker processes); unset: one process.",
    )

    @field_validator("api_token")
    @classmethod
    def _token_not_blank(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value != value.strip()):
            raise ValueError(
                "CTO_API_TOKEN is empty or has surrounding spaces: set a token, or unset the "
                "variable to run without authentication"
            )
        return value

    @model_validator(mode="after")
    def _ports_differ(self) -> Settings:
        if self.fast_port and self.fast_port == self.port:
            raise ValueError(f"CTO_FAST_PORT must differ from CTO_PORT (both {self.port})")
        return self


def get_settings(**overrides: object) -> Settings:
    """Read settings from the environment (``CTO_*``), with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
