"""Score contacts: history -> online features -> models -> the API answer.

Independent of BentoML so it can be tested and benchmarked on its own; :mod:`serving.service`
wraps it. A batch is scored with one ``Booster.predict`` per model over all its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from features.encoding import ROW_LOOP_MAX_ROWS, column_rows
from features.errors import CTOError
from features.schema import CONTACTS, CUSTOMERS, ORDERS
from serving import rules
from serving.explain import driver_text, top_indices
from serving.models import (
    CONTACTS_TO_ORDER,
    CONVERSION_TASK,
    DROPOFF_REASON,
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
from serving.store import CustomerHistory, EventStore

# LightGBM threads per predict call: one request is far too small to gain from more, and the
# server runs requests side by side (see stack notes: OpenMP threads fight under load).
PREDICT_THREADS = 1

_CONTACT_SCHEMA = CONTACTS.polars_schema
_ORDER_SCHEMA = ORDERS.polars_schema
_CUSTOMER_SCHEMA = CUSTOMERS.polars_schema


@dataclass(frozen=True)
class PreparedItem:
    contact: dict
    history: CustomerHistory
    source: str  # "request" or "event_store"


def _frame(rows: Sequence[dict], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=schema)


def history_from_request(history: History) -> CustomerHistory:
    return histories_from_request([history])[0]


def _split(rows: list[dict], owners: list[int], count: int, schema: dict) -> list[pl.DataFrame]:
    """One frame for all items' rows (one construction), split back per item."""
    empty = pl.DataFrame(schema=schema)
    if not rows:
        return [empty] * count
    frame = pl.DataFrame(rows, schema=schema).with_columns(
        pl.Series("_item", owners, dtype=pl.Int64)
    )
    parts = frame.partition_by("_item", as_dict=True, include_key=False)
    return [parts.get((index,), empty) for index in range(count)]


def histories_from_request(histories: Sequence[History]) -> list[CustomerHistory]:
    """Request histories as frames with the contract's dtypes, built in one go for a batch."""
    tables: dict[str, tuple[list[dict], list[int]]] = {
        "contacts": ([], []),
        "orders": ([], []),
        "customer": ([], []),
    }
    for index, history in enumerate(histories):
        for name, models in (
            ("contacts", history.contacts),
            ("orders", history.orders),
            ("customer", [history.customer] if history.customer is not None else []),
        ):
            rows, owners = tables[name]
            rows.extend(model.model_dump() for model in models)
            owners.extend([index] * len(models))
    count = len(histories)
    contacts = _split(*tables["contacts"], count, _CONTACT_SCHEMA)
    orders = _split(*tables["orders"], count, _ORDER_SCHEMA)
    customers = _split(*tables["customer"], count, _CUSTOMER_SCHEMA)
    return [CustomerHistory(c, o, k) for c, o, k in zip(contacts, orders, customers, strict=True)]


def prepare_items(
    items: Sequence[BatchItem | ScoreRequest], store: EventStore | None
) -> list[PreparedItem]:
    """Each contact with its history: from the request where given, else from the event store."""
    prepared: list[PreparedItem | None] = [None] * len(items)
    from_request = [index for index, item in enumerate(items) if item.history is not None]
    from_store = [index for index, item in enumerate(items) if item.history is None]
    histories = histories_from_request([items[i].history for i in from_request])  # type: ignore[misc]
    for index, history in zip(from_request, histories, strict=True):
        prepared[index] = PreparedItem(items[index].contact.model_dump(), history, "request")
    if from_store:
        if store is None:
            raise LookupError("history: not in the request and the service has no event store")
        contacts = [items[i].contact for i in from_store]
        histories = store.histories(
            [c.customer_id for c in contacts], [c.started_at for c in contacts]
        )
        for index, contact, history in zip(from_store, contacts, histories, strict=True):
            prepared[index] = PreparedItem(contact.model_dump(), history, "event_store")
    return prepared  # type: ignore[return-value]


@dataclass(frozen=True)
class FeatureWindows:
    """Label settings the feature pipeline needs (passed in, so no settings read per call)."""

    journey_gap_days: int
    horizon_days: int


def _round_features(
    prepared: Sequence[PreparedItem], moment: str, rates: object, windows: FeatureWindows
) -> pl.DataFrame:
    """Features of contacts of distinct customers in one pipeline run, input order.

    Each item's history is narrowed to its own customer lazily (a request may carry other
    customers' rows), so the stacked histories give each contact exactly what it would get alone
    (:func:`features.pipeline.online_features_many`), in one Polars plan for the whole round.
    """
    from features.pipeline import online_features_many

    if len(prepared) == 1:
        # One customer: the pipeline itself keeps only its rows; no stacking to plan.
        (item,) = prepared
        return online_features_many(
            item.history.contacts,
            item.history.orders,
            _frame([item.contact], _CONTACT_SCHEMA),
            item.history.customer if item.history.customer.height else None,
            rates,
            moment,
            journey_gap_days=windows.journey_gap_days,
            horizon_days=windows.horizon_days,
        )

    def own(frame: pl.DataFrame, item: PreparedItem) -> pl.LazyFrame:
        return frame.lazy().filter(pl.col("customer_id") == item.contact["customer_id"])

    contacts = pl.concat(
        [own(item.history.contacts, item) for item in prepared], how="vertical_relaxed"
    )
    orders = pl.concat(
        [own(item.history.orders, item) for item in prepared], how="vertical_relaxed"
    )
    with_customer = [item for item in prepared if item.history.customer.height]
    customers = (
        pl.concat(
            [own(item.history.customer, item).head(1) for item in with_customer],
            how="vertical_relaxed",
        )
        if with_customer
        else None
    )
    return online_features_many(
        contacts,
        orders,
        _frame([item.contact for item in prepared], _CONTACT_SCHEMA),
        customers,
        rates,
        moment,
        journey_gap_days=windows.journey_gap_days,
        horizon_days=windows.horizon_days,
    )


def customer_rounds(customer_ids: Sequence[str]) -> list[list[int]]:
    """Positions grouped so no round holds a customer twice: a customer's n-th item is in round n.

    Within a round every contact sees only its own history, so a batch answers exactly what
    /score answers for each contact alone.
    """
    occurrences: dict[str, int] = {}
    rounds: list[list[int]] = []
    for index, customer in enumerate(customer_ids):
        round_number = occurrences.get(customer, 0)
        occurrences[customer] = round_number + 1
        if round_number == len(rounds):
            rounds.append([])
        rounds[round_number].append(index)
    return rounds


def feature_rows(
    prepared: Sequence[PreparedItem], moment: str, rates: object, windows: FeatureWindows
) -> pl.DataFrame:
    """One feature row per item, in input order, through the feature pipeline (same code as batch).

    One pipeline run per round of distinct customers (:func:`customer_rounds`).
    """
    rounds = customer_rounds([item.contact["customer_id"] for item in prepared])
    parts = [
        _round_features([prepared[i] for i in members], moment, rates, windows)
        for members in rounds
    ]
    if len(parts) == 1:
        return parts[0]
    frame = pl.concat(parts, how="vertical_relaxed")
    # Row k of the stacked rounds is item positions[k]; gather back to input order.
    positions = [i for members in rounds for i in members]
    input_order = [0] * len(positions)
    for stacked_row, item_index in enumerate(positions):
        input_order[item_index] = stacked_row
    return frame[input_order]


def _history_counts(prepared: Sequence[PreparedItem]) -> list[int]:
    """Earlier contacts of each item's customer in its history, all items in one plan."""
    counts = [
        item.history.contacts.lazy().select(
            (
                (pl.col("customer_id") == item.contact["customer_id"])
                & (pl.col("started_at") < item.contact["started_at"])
                & (pl.col("contact_id") != item.contact["contact_id"])
            )
            .sum()
            .cast(pl.Int64)
            .alias("history_contacts")
        )
        for item in prepared
    ]
    return pl.concat(counts).collect(engine="in-memory")["history_contacts"].to_list()


def _model_ref(model: LoadedModel) -> ModelRef:
    return ModelRef(name=model.name, version=model.version, alias=model.alias)


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


def score_items(
    bundle: ModelBundle,
    prepared: Sequence[PreparedItem],
    *,
    moment: str,
    explain: bool,
    top_k: int,
    windows: FeatureWindows,
) -> list[ScoreResponse]:
    """Answers for prepared items, in input order; each model predicts once for all rows."""
    features = feature_rows(prepared, moment, bundle.rates_for(moment), windows)
    conversion = bundle.models[CONVERSION_TASK[moment]]
    x = conversion.encoder.encode(features)
    raw = np.asarray(conversion.booster.predict(x, raw_score=True, num_threads=PREDICT_THREADS))
    probability = conversion.probability(raw)
    contributions = None
    values: list[tuple] = []
    if explain:
        contributions = np.asarray(
            conversion.booster.predict(x, pred_contrib=True, num_threads=PREDICT_THREADS)
        )
        values = (
            column_rows(features, conversion.feature_names)
            if features.height <= ROW_LOOP_MAX_ROWS
            else features.select(conversion.feature_names).rows()
        )
    models_used = [conversion]

    reasons = None
    dropoff = bundle.get(DROPOFF_REASON) if moment == "after_contact" else None
    if dropoff is not None:
        reasons = np.asarray(
            dropoff.booster.predict(dropoff.encoder.encode(features), num_threads=PREDICT_THREADS)
        )
        models_used.append(dropoff)
    expected_contacts = None
    contacts_model = bundle.get(CONTACTS_TO_ORDER) if moment == "after_contact" else None
    if contacts_model is not None:
        further = np.asarray(
            contacts_model.booster.predict(
                contacts_model.encoder.encode(features), num_threads=PREDICT_THREADS
            )
        )
        # The model predicts further contacts after this one; the answer counts this one too.
        expected_contacts = 1.0 + further
        models_used.append(contacts_model)
    refs = [_model_ref(m) for m in models_used]
    # contacts_lifetime counts exactly the history's earlier contacts of the customer (strictly
    # before this contact's instant): no second plan needed when the feature set has it.
    history_counts = (
        features["contacts_lifetime"].to_list()
        if "contacts_lifetime" in features.columns
        else _history_counts(prepared)
    )

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
        if moment == "after_contact":
            fired = rules.next_action(item.contact, p, reason_map)
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


def score_one(
    bundle: ModelBundle, request: ScoreRequest, store: EventStore | None, windows: FeatureWindows
) -> ScoreResponse:
    prepared = prepare_items([request], store)
    return score_items(
        bundle,
        prepared,
        moment=request.moment,
        explain=request.explain,
        top_k=request.top_k,
        windows=windows,
    )[0]


def score_batch(
    bundle: ModelBundle,
    request: ScoreBatchRequest,
    store: EventStore | None,
    windows: FeatureWindows,
) -> ScoreBatchResponse:
    prepared = prepare_items(request.items, store)
    answers = score_items(
        bundle,
        prepared,
        moment=request.moment,
        explain=request.explain,
        top_k=request.top_k,
        windows=windows,
    )
    # A queue to work: highest rank first; ties keep the input order (stable sort).
    order = sorted(range(len(answers)), key=lambda i: -answers[i].priority.rank_score)
    queue = []
    for position, index in enumerate(order, start=1):
        answer = answers[index]
        answer.queue_position = position
        queue.append(answer)
    return ScoreBatchResponse(items=queue, count=len(queue))


def score_requests(
    bundle: ModelBundle,
    requests: Sequence[ScoreRequest],
    store: EventStore | None,
    windows: FeatureWindows,
) -> list[ScoreResponse | CTOError]:
    """Answers for concurrent /score requests gathered by the server's adaptive batcher.

    Requests asking the same thing (moment, explain, top_k) share one feature run per round of
    distinct customers and one predict per model. A bad request must not fail its neighbours:
    when a group fails, its requests are answered one by one, each with its own error.
    """
    groups: dict[tuple[str, bool, int], list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault((request.moment, request.explain, request.top_k), []).append(index)
    answers: list[ScoreResponse | CTOError | None] = [None] * len(requests)
    for (moment, explain, top_k), members in groups.items():
        try:
            prepared = prepare_items([requests[i] for i in members], store)
            scored = score_items(
                bundle, prepared, moment=moment, explain=explain, top_k=top_k, windows=windows
            )
        except CTOError as exc:
            if len(members) == 1:
                answers[members[0]] = exc
                continue
            for index in members:
                try:
                    answers[index] = score_one(bundle, requests[index], store, windows)
                except CTOError as single_exc:
                    answers[index] = single_exc
            continue
        for index, answer in zip(members, scored, strict=True):
            answers[index] = answer
    return answers  # type: ignore[return-value]
