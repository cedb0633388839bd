"""Prices, write side: adding a period to a model's price history.

The runtime role may only read the catalogue, so prices are written through the owner's
connection (`DATABASE_OWNER_URL`, as `migrate` is): by `manage.py load_prices` and by the
admin where that connection is configured. History is append-only: a new period closes the
model's open one where it starts, an identical period is recognised (loading a file twice
changes nothing), and nothing is ever backdated over a period calls may have used.
"""

import datetime
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connections, transaction

from llm.models import ModelPrice
from llm.money import MAX_REQUEST_FEE_MICROS, MAX_TOKEN_PRICE_MICROS, format_micros
from llm.prices import CATALOGUE

OWNER_ALIAS = "owner"
PRICE_FIELDS = (
    "provider",
    "input_micros_per_mtok",
    "cached_input_micros_per_mtok",
    "output_micros_per_mtok",
    "request_fee_micros",
)


class InvalidPrice(ValueError):
    """A price the catalogue refuses; nothing was written."""


@dataclass(frozen=True)
class PriceToAdd:
    model: str
    provider: str
    input_micros_per_mtok: int
    cached_input_micros_per_mtok: int
    output_micros_per_mtok: int
    valid_from: datetime.datetime
    request_fee_micros: int = 0


def price_problem(price: PriceToAdd) -> str | None:
    """What is wrong with `price` on its own (before its model's history is looked at), or None."""
    if not price.model or any(c.isspace() for c in price.model):
        return "the model must be a name without spaces"
    if not price.provider.strip():
        return "the provider must not be blank"
    if price.valid_from.tzinfo is None:
        return "valid_from needs a time zone (e.g. 2026-12-01T00:00:00Z)"
    for field in ("input_micros_per_mtok", "cached_input_micros_per_mtok", "output_micros_per_mtok"):
        value = getattr(price, field)
        if type(value) is not int or not 0 <= value <= MAX_TOKEN_PRICE_MICROS:
            return (
                f"{field} must be whole µUSD from 0 to {MAX_TOKEN_PRICE_MICROS:,} "
                f"({format_micros(MAX_TOKEN_PRICE_MICROS)} per million tokens), got {value!r}"
            )
    if (
        type(price.request_fee_micros) is not int
        or not 0 <= price.request_fee_micros <= MAX_REQUEST_FEE_MICROS
    ):
        return f"request_fee_micros must be whole µUSD from 0 to {MAX_REQUEST_FEE_MICROS:,}"
    if price.cached_input_micros_per_mtok > price.input_micros_per_mtok:
        return "a cached input token cannot cost more than an input token"
    return None


def owner_connection_configured() -> bool:
    return OWNER_ALIAS in connections.settings


def _history_problem(
    history: list[ModelPrice], price: PriceToAdd, now: datetime.datetime
) -> tuple[ModelPrice | None, str | None]:
    """Against the model's history (by valid_from): the identical period already there, or
    what stops `price` from being appended, or (None, None) when it may be."""
    same_start = next((row for row in history if row.valid_from == price.valid_from), None)
    if same_start is not None:
        if all(getattr(same_start, f) == getattr(price, f) for f in PRICE_FIELDS):
            return same_start, None
        return None, (
            f"a different price already starts at {price.valid_from.isoformat()}; history is never "
            "rewritten, add a new period instead"
        )
    if history and history[-1].valid_from > price.valid_from:
        return None, (
            f"its latest period starts at {history[-1].valid_from.isoformat()}; "
            "a new period must start after it"
        )
    lead = datetime.timedelta(seconds=price_change_lead_seconds())
    if any(row.valid_to is None for row in history) and price.valid_from < now + lead:
        return None, (
            f"{price.valid_from.isoformat()} is too soon: a new price takes effect at least "
            f"{lead.total_seconds():.0f} s from now (every process's estimates must know it before a "
            "call they admit can be recorded at it), and never in the past, where calls may have "
            "been priced with the period it would cut short"
        )
    return None, None


def price_change_lead_seconds() -> int:
    """How far ahead a price change must be scheduled: a process's cached catalogue may be
    LLM_PRICE_CACHE_SECONDS old, and a call it admits may be recorded up to a reservation's
    lease later. A change this far ahead is in every estimate that could meet it."""
    return settings.LLM_PRICE_CACHE_SECONDS + settings.LLM_RESERVATION_LEASE_SECONDS


def check_price_period(*, price: PriceToAdd, now: datetime.datetime | None = None) -> str | None:
    """What would stop `add_price_period(price)` now, or None (for forms; nothing locked)."""
    if problem := price_problem(price):
        return problem
    history = list(ModelPrice.objects.filter(model=price.model).order_by("valid_from"))
    return _history_problem(history, price, now or datetime.datetime.now(datetime.UTC))[1]


def add_price_period(*, price: PriceToAdd, now: datetime.datetime | None = None) -> tuple[ModelPrice, bool]:
    """Add `price` to its model's history; returns the row and whether it was new.

    Raises InvalidPrice, and writes nothing, for an absurd or malformed price, a different
    price already starting at the same time, a period starting before the model's latest
    one, or one that would close the open period before now (calls may have used it).
    """
    if problem := price_problem(price):
        raise InvalidPrice(f"{price.model}: {problem}; nothing was written.")
    if not owner_connection_configured():
        raise InvalidPrice(
            "Prices are written as the table owner: set DATABASE_OWNER_URL "
            "(the runtime role may only read them)."
        )
    now = now or datetime.datetime.now(datetime.UTC)
    prices = ModelPrice.objects.using(OWNER_ALIAS)
    try:
        with transaction.atomic(using=OWNER_ALIAS):
            # One writer per model at a time: the model's rows, locked, then decided on.
            history = list(prices.select_for_update().filter(model=price.model).order_by("valid_from"))
            existing, problem = _history_problem(history, price, now)
            if existing is not None:
                return existing, False
            if problem:
                raise InvalidPrice(f"{price.model}: {problem}; nothing was written.")
            prices.filter(model=price.model, valid_to__isnull=True).update(valid_to=price.valid_from)
            row = prices.create(
                model=price.model,
                valid_from=price.valid_from,
                **{f: getattr(price, f) for f in PRICE_FIELDS},
            )
    except IntegrityError as error:  # the database's own checks, should one be stricter
        name = getattr(getattr(error.__cause__, "diag", None), "constraint_name", None) or "a constraint"
        raise InvalidPrice(f"{price.model}: refused by {name}; nothing was written.") from None
    CATALOGUE.invalidate()
    return row, True
