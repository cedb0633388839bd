"""The global price catalogue: what each model costs, period by period (llm/prices.py reads
it, llm/services/prices.py writes it)."""

from django.contrib.postgres.constraints import ExclusionConstraint
from django.contrib.postgres.fields import RangeBoundary, RangeOperators
from django.db import models
from django.db.models import Func, Q
from django.db.models.functions import Now

from llm.models.fields import uuid_pk
from llm.money import MAX_REQUEST_FEE_MICROS, MAX_TOKEN_PRICE_MICROS


class TsTzRange(Func):
    function = "TSTZRANGE"
    output_field = models.DateTimeField()  # only ever compared with &&, never read


class ModelPrice(models.Model):
    """What one model costs during one period: per million input, cached-input and output
    tokens, plus a per-request fee, in micro-USD. Global (not tenant-sealed); the runtime role
    may only read it. A call stores the id of the row it was priced with, so a later price
    never reprices history."""

    id = uuid_pk()
    model = models.TextField()
    provider = models.TextField()
    input_micros_per_mtok = models.BigIntegerField(help_text="µUSD per million input tokens.")
    cached_input_micros_per_mtok = models.BigIntegerField(help_text="µUSD per million cached input tokens.")
    output_micros_per_mtok = models.BigIntegerField(help_text="µUSD per million output tokens.")
    request_fee_micros = models.BigIntegerField(default=0, db_default=0, help_text="µUSD per request.")
    valid_from = models.DateTimeField(help_text="In force from (inclusive).")
    valid_to = models.DateTimeField(
        null=True, blank=True, help_text="In force until (exclusive); open if empty."
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "llm_model_prices"
        verbose_name = "model price"
        constraints = [
            models.CheckConstraint(
                condition=Q(model__regex=r"^\S+$"), name="llm_model_prices_model_is_a_name"
            ),
            models.CheckConstraint(
                condition=Q(provider__regex=r"\S"), name="llm_model_prices_provider_not_blank"
            ),
            *(
                models.CheckConstraint(
                    condition=Q(**{f"{field}__gte": 0, f"{field}__lte": MAX_TOKEN_PRICE_MICROS}),
                    name=f"llm_model_prices_{field}_in_range",
                )
                for field in (
                    "input_micros_per_mtok",
                    "cached_input_micros_per_mtok",
                    "output_micros_per_mtok",
                )
            ),
            models.CheckConstraint(
                condition=Q(request_fee_micros__gte=0, request_fee_micros__lte=MAX_REQUEST_FEE_MICROS),
                name="llm_model_prices_request_fee_micros_in_range",
            ),
            # A cached token is a discounted input token, never dearer: it is billed once, at this price.
            models.CheckConstraint(
                condition=Q(cached_input_micros_per_mtok__lte=models.F("input_micros_per_mtok")),
                name="llm_model_prices_cached_not_above_input",
            ),
            models.CheckConstraint(
                condition=Q(valid_to__isnull=True) | Q(valid_to__gt=models.F("valid_from")),
                name="llm_model_prices_period_not_empty",
            ),
            # One price per model at any instant (needs btree_gist for the text equality).
            ExclusionConstraint(
                name="llm_model_prices_no_overlap",
                expressions=[
                    ("model", RangeOperators.EQUAL),
                    (TsTzRange("valid_from", "valid_to", RangeBoundary()), RangeOperators.OVERLAPS),
                ],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.valid_from:%Y-%m-%d %H:%M}"
