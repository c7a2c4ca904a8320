"""Score contacts: customer state -> online features -> models -> the API answer.

No Polars plan per request: the customer's state comes from the online store (or is folded from
the history in the request, by the same code), the registry's online forms turn it and the
contact into feature values (:mod:`features.online`), the model card's encoding turns those into
a float row, and each model predicts once for all rows of a batch.

Independent of BentoML so it can be tested and benchmarked on its own; :mod:`serving.service`
wraps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.errors import CTOError
from features.online import CustomerState, online_values, state_from_history
from serving import rules
from serving.explain import driver_text, top_indices
from serving.models import (
    CONTACTS_TO_ORDER,
    CONVERSION_TASK,
    DROPOFF_REASON,
    UPLIFT_TASKS,
    LoadedModel,
    ModelBundle,
)
from serving.schemas import (
    BatchItem,
    Driver,
    History,
    ModelRef,
    NextAction,
    Priority,
    ReasonProbability,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreRequest,
    ScoreResponse,
)
from serving.store import EventStore

# LightGBM threads per predict call: one request is far too small to gain from more, and the
# server runs requests side by side (see stack notes: OpenMP threads fight under load).
PREDICT_THREADS = 1


@dataclass(frozen=True)
class FeatureWindows:
    """Settings a scoring call needs, read once by the service (no settings read per call): the
    label windows the journey features need, and the action costs the next action weighs."""

    journey_gap_days: int
    horizon_days: int
    costs: rules.ActionCosts = rules.ActionCosts()


@dataclass(frozen=True)
class PreparedItem:
    contact: dict
    values: dict[str, Any]  # feature name -> value at the scoring moment (registry order)
    source: str  # "request" or "event_store"


def state_from_request(history: History, customer_id: str) -> CustomerState:
    """A fresh state from a request's history: only the scored contact's customer's rows."""
    return state_from_history(
        [c.model_dump() for c in history.contacts if c.customer_id == customer_id],
        [o.model_dump() for o in history.orders if o.customer_id == customer_id],
        history.customer.model_dump()
        if history.customer is not None and history.customer.customer_id == customer_id
        else None,
    )


def prepare_items(
    items: Sequence[BatchItem | ScoreRequest],
    store: EventStore | None,
    moment: str,
    rates: Any,
    windows: FeatureWindows,
) -> list[PreparedItem]:
    """Each contact's feature values, from the history in the request or the online store."""
    prepared = []
    for item in items:
        contact = item.contact.model_dump()
        if item.history is not None:
            state, source = state_from_request(item.history, contact["customer_id"]), "request"
        else:
            if store is None:
                raise CTOError("history: not in the request and the service has no event store")
            state, source = store.state(contact["customer_id"]), "event_store"
        values = online_values(
            state,
            contact,
            moment,
            journey_gap_days=windows.journey_gap_days,
            horizon_days=windows.horizon_days,
            rates=rates,
        )
        prepared.append(PreparedItem(contact, values, source))
    return prepared


def _rows(model: LoadedModel, prepared: Sequence[PreparedItem]) -> list[tuple]:
    try:
        return [tuple(item.values[name] for name in model.feature_names) for item in prepared]
    except KeyError as exc:
        raise CTOError(
            f"{model.name} v{model.version} reads feature {exc.args[0]!r}, which the feature set "
            "does not compute at this moment"
        ) from exc


def _model_ref(model: LoadedModel) -> ModelRef:
    return ModelRef(
        name=model.name,
        version=model.version,
        alias=model.alias,
        data_mismatch=model.data_mismatch,
    )


def _drivers(
    model: LoadedModel, contributions: np.ndarray, values: Sequence[object], top_k: int
) -> list[Driver]:
    drivers = []
    for index in top_indices(contributions, top_k):
        name = model.feature_names[index]
        value = values[index]
        contribution = float(contributions[index])
        text, percentile = driver_text(name, value, contribution, model.references.get(name))
        if isinstance(value, str) and name in model.category_shares:
            share = model.category_shares[name].get(value)
            if share is not None:
                text = text.replace(":", f" ({share:.0%} of contacts):", 1)
        if isinstance(value, float) and np.isnan(value):
            value = None
        drivers.append(
            Driver(
                feature=name,
                value=value,
                contribution=contribution,
                percentile=percentile,
                text=text,
            )
        )
    return drivers


def informative(model: LoadedModel) -> bool:
    """The uplift model ranked its randomised test rows better than random targeting (card)."""
    return bool((model.card.get("details") or {}).get("informative", False))


def _uplifts(
    bundle: ModelBundle, prepared: Sequence[PreparedItem], models_used: list[LoadedModel]
) -> dict[str, list[float | None]]:
    """Per decision, each item's uplift (None where the decision does not apply); only the
    decisions whose uplift model is loaded."""
    from features.decisions import DECISIONS

    by_name = {d.name: d for d in DECISIONS}
    out: dict[str, list[float | None]] = {}
    for task, key in UPLIFT_TASKS.items():
        model = bundle.get(task)
        if model is None:
            continue
        decision = by_name[task]
        rows = [i for i, item in enumerate(prepared) if decision.applies(item.contact)]
        values: list[float | None] = [None] * len(prepared)
        if rows:
            x = model.encoder.encode_rows(_rows(model, [prepared[i] for i in rows]))
            predicted = np.asarray(model.booster.predict(x, num_threads=PREDICT_THREADS))
            for i, value in zip(rows, predicted.tolist(), strict=True):
                values[i] = float(value)
        out[key] = values
        models_used.append(model)
    return out


def score_items(
    bundle: ModelBundle,
    prepared: Sequence[PreparedItem],
    *,
    moment: str,
    explain: bool,
    top_k: int,
    costs: rules.ActionCosts | None = None,
) -> list[ScoreResponse]:
    """Answers for prepared items, in input order; each model predicts once for all rows."""
    conversion = bundle.models[CONVERSION_TASK[moment]]
    values = _rows(conversion, prepared)
    x = conversion.encoder.encode_rows(values)
    raw = np.asarray(conversion.booster.predict(x, raw_score=True, num_threads=PREDICT_THREADS))
    probability = conversion.probability(raw)
    contributions = None
    if explain:
        contributions = np.asarray(
            conversion.booster.predict(x, pred_contrib=True, num_threads=PREDICT_THREADS)
        )
    models_used = [conversion]

    reasons = None
    dropoff = bundle.get(DROPOFF_REASON) if moment == "after_contact" else None
    if dropoff is not None:
        reasons = np.asarray(
            dropoff.booster.predict(
                dropoff.encoder.encode_rows(_rows(dropoff, prepared)), num_threads=PREDICT_THREADS
            )
        )
        models_used.append(dropoff)
    expected_contacts = None
    contacts_model = bundle.get(CONTACTS_TO_ORDER) if moment == "after_contact" else None
    if contacts_model is not None:
        further = np.asarray(
            contacts_model.booster.predict(
                contacts_model.encoder.encode_rows(_rows(contacts_model, prepared)),
                num_threads=PREDICT_THREADS,
            )
        )
        # The model predicts further contacts after this one; the answer counts this one too.
        expected_contacts = 1.0 + further
        models_used.append(contacts_model)
    uplifts = _uplifts(bundle, prepared, models_used) if moment == "after_contact" else {}
    gating = {
        key
        for task, key in UPLIFT_TASKS.items()
        if key in uplifts and informative(bundle.models[task])
    }
    refs = [_model_ref(m) for m in models_used]
    # contacts_lifetime: the customer's contacts strictly before this contact's instant.
    history_counts = [item.values.get("contacts_lifetime", 0) for item in prepared]

    responses = []
    for row, item in enumerate(prepared):
        p = float(probability[row])
        reason_list = None
        reason_map = None
        if reasons is not None and dropoff is not None and dropoff.class_names:
            reason_map = dict(zip(dropoff.class_names, reasons[row].tolist(), strict=True))
            reason_list = [
                ReasonProbability(reason=k, probability=v)
                for k, v in sorted(reason_map.items(), key=lambda kv: -kv[1])
            ]
        action = None
        uplift = {key: values[row] for key, values in uplifts.items()}
        if moment == "after_contact":
            # Only an uplift model that beat random targeting on randomised rows gates the rules.
            weighed = {k: v for k, v in uplift.items() if k in gating}
            fired = rules.next_action(item.contact, p, reason_map, weighed, costs)
            action = NextAction(action=fired.action, rule=fired.rule, reason=fired.reason)
        response = ScoreResponse(
            contact_id=item.contact["contact_id"],
            customer_id=item.contact["customer_id"],
            moment=moment,
            conversion_probability=p,
            raw_score=float(raw[row]),
            priority=Priority(tier=rules.priority_tier(p), rank_score=p),
            dropoff_reasons=reason_list,
            next_action=action,
            expected_contacts_to_order=(
                float(expected_contacts[row]) if expected_contacts is not None else None
            ),
            follow_up_uplift=uplift.get("follow_up"),
            callback_uplift=uplift.get("callback"),
            history_source=item.source,
            history_contacts=history_counts[row],
            models=refs,
        )
        if contributions is not None:
            per_feature = contributions[row, :-1]
            response.base_value = float(contributions[row, -1])
            response.contributions_sum = float(per_feature.sum())
            response.drivers = _drivers(conversion, per_feature, values[row], top_k)
        responses.append(response)
    return responses


def _score_all(
    bundle: ModelBundle,
    request: ScoreRequest | ScoreBatchRequest,
    items: Sequence[BatchItem | ScoreRequest],
    store: EventStore | None,
    windows: FeatureWindows,
) -> list[ScoreResponse]:
    """``items`` scored at the request's moment with its explain settings, in their order."""
    moment = request.moment
    prepared = prepare_items(items, store, moment, bundle.rates_for(moment), windows)
    return score_items(
        bundle,
        prepared,
        moment=moment,
        explain=request.explain,
        top_k=request.top_k,
        costs=windows.costs,
    )


def score_one(
    bundle: ModelBundle, request: ScoreRequest, store: EventStore | None, windows: FeatureWindows
) -> ScoreResponse:
    return _score_all(bundle, request, [request], store, windows)[0]


def score_batch(
    bundle: ModelBundle,
    request: ScoreBatchRequest,
    store: EventStore | None,
    windows: FeatureWindows,
) -> ScoreBatchResponse:
    """Every item scored as it would be alone (its own history), one predict per model."""
    answers = _score_all(bundle, request, request.items, store, windows)
    # A queue to work: highest rank first; ties keep the input order (stable sort).
    order = sorted(range(len(answers)), key=lambda i: -answers[i].priority.rank_score)
    queue = []
    for position, index in enumerate(order, start=1):
        answer = answers[index]
        answer.queue_position = position
        queue.append(answer)
    return ScoreBatchResponse(items=queue, count=len(queue))
