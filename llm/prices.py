"""Model prices, read side: the cost formula, and the catalogue as this process knows it.

A call's cost, in µUSD, is

    request_fee + round_half_up(( (input - cached_input) * input_price
                                 + cached_input * cached_input_price
                                 + output * output_price ) / 1,000,000)

with prices per million tokens: cached tokens are billed once, at the cached price, and
the only rounding is the one. Recording computes it in SQL (llm/sql/accounting.py), with the price
in force at the call's `created_at`; this module's `call_cost_micros` is the same formula
for estimates before a call, and for tests.

The catalogue is cached per process for `LLM_PRICE_CACHE_SECONDS` (a small table read
whole), so checking a model or estimating a call adds no round trip. Prices written by this
process invalidate its cache at once; other processes see them within that time. Recording
never uses the cache: a call is priced by the database, at its own time.
"""

import datetime
import threading
import time
from dataclasses import dataclass

from django.conf import settings

from llm.money import TOKENS_PER_PRICE_UNIT
from llm.payloads import InvalidPayload


class NoPriceInForce(InvalidPayload):
    """An unknown model, or one with no price at that time: never a free call."""


@dataclass(frozen=True)
class Price:
    id: object
    model: str
    input_micros_per_mtok: int
    cached_input_micros_per_mtok: int
    output_micros_per_mtok: int
    request_fee_micros: int
    valid_from: datetime.datetime
    valid_to: datetime.datetime | None

    def in_force_at(self, at: datetime.datetime) -> bool:
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)


def call_cost_micros(*, price: Price, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> int:
    """One call's cost in µUSD (the module docstring's formula)."""
    token_micros = (
        (input_tokens - cached_input_tokens) * price.input_micros_per_mtok
        + cached_input_tokens * price.cached_input_micros_per_mtok
        + output_tokens * price.output_micros_per_mtok
    )
    return price.request_fee_micros + (token_micros + TOKENS_PER_PRICE_UNIT // 2) // TOKENS_PER_PRICE_UNIT


class _Catalogue:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, list[Price]] = {}
        self._loaded_at: float | None = None

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = None

    def prices_of(self, model: str) -> list[Price]:
        with self._lock:
            if (
                self._loaded_at is None
                or time.monotonic() - self._loaded_at > settings.LLM_PRICE_CACHE_SECONDS
            ):
                self._by_model = _load_catalogue()
                self._loaded_at = time.monotonic()
            return self._by_model.get(model, [])


def _load_catalogue() -> dict[str, list[Price]]:
    from llm.models import ModelPrice

    by_model: dict[str, list[Price]] = {}
    for row in ModelPrice.objects.order_by("model", "valid_from").values(*Price.__dataclass_fields__):
        by_model.setdefault(row["model"], []).append(Price(**row))
    return by_model


CATALOGUE = _Catalogue()


def price_in_force(model: str, *, at: datetime.datetime | None = None) -> Price:
    """The model's price at `at` (now by default), or NoPriceInForce naming the problem."""
    at = at or datetime.datetime.now(datetime.UTC)
    prices = CATALOGUE.prices_of(model)
    for price in prices:
        if price.in_force_at(at):
            return price
    if not prices:
        raise NoPriceInForce(
            f"Unknown model {model!r}: it has no price in the catalogue; nothing was recorded."
        )
    raise NoPriceInForce(f"Model {model!r} has no price in force at {at.isoformat()}; nothing was recorded.")


def prices_in_force_between(model: str, *, start: datetime.datetime, end: datetime.datetime) -> list[Price]:
    """The model's prices in force at some time in [start, end): the one at `start` (or
    NoPriceInForce) and any scheduled to begin before `end`."""
    first = price_in_force(model, at=start)
    later = [p for p in CATALOGUE.prices_of(model) if start < p.valid_from < end]
    return [first, *later]
