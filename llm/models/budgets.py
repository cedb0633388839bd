"""Budgets, tenant-sealed like the LLM tables: each tenant's caps, the state of each period
against them, the reservations made before calls, every admission decision, and the alerts
when spend crosses a threshold (llm/services/budgets.py and alerts.py keep them).

All amounts are integer micro-USD. A period's state is only ever changed by single
conditional statements (reserve: `spent + reserved + estimate <= cap`; settle; release), so
concurrent callers in any number of processes share one exact counter.
"""

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from llm.models.fields import non_negative, tenant_fk, uuid_pk

DEFAULT_THRESHOLDS = (50, 80, 100)


def default_thresholds() -> list[int]:
    return list(DEFAULT_THRESHOLDS)


class OnExceed(models.TextChoices):
    BLOCK = "block"
    FALLBACK = "fallback"


class BudgetPeriod(models.TextChoices):
    MONTH = "month"  # the calendar UTC month
    HOUR = "hour"


class Budget(models.Model):
    """A tenant's caps, set by operators (admin, `manage.py set_budget`), never by the tenant.
    No row: no budget, unlimited."""

    id = uuid_pk()
    tenant = tenant_fk("budgets")
    monthly_cap_micros = models.BigIntegerField(help_text="µUSD per calendar UTC month.")
    hourly_cap_micros = models.BigIntegerField(null=True, blank=True, help_text="µUSD per hour (optional).")
    thresholds = ArrayField(
        models.SmallIntegerField(),
        default=default_thresholds,
        help_text="Alert at these percents of the cap.",
    )
    on_exceed = models.TextField(choices=OnExceed.choices, default=OnExceed.BLOCK)
    fallback_models = ArrayField(
        models.TextField(),
        default=list,
        blank=True,
        help_text="With on_exceed=fallback: the cheaper models to try instead, in order.",
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "llm_budgets"
        constraints = [
            models.UniqueConstraint(fields=["tenant"], name="llm_budgets_one_per_tenant"),
            models.CheckConstraint(
                condition=Q(monthly_cap_micros__gt=0), name="llm_budgets_monthly_cap_positive"
            ),
            models.CheckConstraint(
                condition=Q(hourly_cap_micros__isnull=True) | Q(hourly_cap_micros__gt=0),
                name="llm_budgets_hourly_cap_positive",
            ),
            models.CheckConstraint(
                condition=Q(on_exceed__in=OnExceed.values), name="llm_budgets_on_exceed_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"budget of {self.tenant_id}"


class BudgetState(models.Model):
    """A tenant's spend against one period's cap: settled `spent`, and `reserved` for calls in
    flight. Created by the period's first reservation, with what the period had already spent."""

    id = uuid_pk()
    tenant = tenant_fk("budget_states")
    period = models.TextField(choices=BudgetPeriod.choices)
    period_start = models.DateTimeField()
    cap_micros = models.BigIntegerField()
    spent_micros = models.BigIntegerField(default=0, db_default=0)
    reserved_micros = models.BigIntegerField(default=0, db_default=0)
    updated_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "llm_budget_state"
        verbose_name = "budget state"
        constraints = [
            *non_negative("llm_budget_state", "spent_micros", "reserved_micros"),
            models.CheckConstraint(condition=Q(cap_micros__gt=0), name="llm_budget_state_cap_positive"),
            models.CheckConstraint(
                condition=Q(period__in=BudgetPeriod.values), name="llm_budget_state_period_valid"
            ),
            models.UniqueConstraint(
                fields=["tenant", "period", "period_start"], name="llm_budget_state_tenant_period_uniq"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.period} from {self.period_start:%Y-%m-%d %H:%M}"


class ReservationStatus(models.TextChoices):
    RESERVED = "reserved"
    SETTLED = "settled"
    RELEASED = "released"


class BudgetReservation(models.Model):
    """A call's estimated cost, held against its periods from admission until its call is
    recorded (settled at its actual cost) or fails (released). One per (tenant, request_id,
    endpoint): a redelivered or retried task finds its own."""

    id = uuid_pk()
    tenant = tenant_fk("budget_reservations")
    request_id = models.TextField()
    endpoint = models.TextField()
    model = models.TextField(help_text="The model admitted (a fallback's, when one was chosen).")
    estimate_micros = models.BigIntegerField()
    actual_micros = models.BigIntegerField(null=True, blank=True)
    month_start = models.DateTimeField()
    hour_start = models.DateTimeField(null=True, blank=True, help_text="Set when an hourly cap applied.")
    status = models.TextField(choices=ReservationStatus.choices, default=ReservationStatus.RESERVED)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    lease_expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "llm_budget_reservations"
        constraints = [
            *non_negative("llm_budget_reservations", "estimate_micros", "actual_micros"),
            models.CheckConstraint(
                condition=Q(status__in=ReservationStatus.values), name="llm_budget_reservations_status_valid"
            ),
            models.UniqueConstraint(
                fields=["tenant", "request_id", "endpoint"],
                name="llm_budget_reservations_tenant_request_uniq",
            ),
        ]
        indexes = [
            # The lease sweep: open reservations whose lease ran out.
            models.Index(
                "tenant",
                "lease_expires_at",
                name="budget_reservations_open",
                condition=Q(status=ReservationStatus.RESERVED),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.request_id} ({self.status})"


class Decision(models.TextChoices):
    ALLOW = "ALLOW"
    BLOCK = "BLOCK"
    FALLBACK = "FALLBACK"


class BudgetDecision(models.Model):
    """One admission decision of a budgeted tenant's call; append-only for the runtime role."""

    id = uuid_pk()
    tenant = tenant_fk("budget_decisions")
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    request_id = models.TextField()
    endpoint = models.TextField()
    requested_model = models.TextField()
    resolved_model = models.TextField(null=True, blank=True)  # noqa: DJ001 - none when blocked
    estimate_micros = models.BigIntegerField()
    budget = models.TextField(choices=BudgetPeriod.choices, help_text="The period that decided.")
    cap_micros = models.BigIntegerField()
    remaining_micros = models.BigIntegerField(help_text="What that period had left, before this call.")
    decision = models.TextField(choices=Decision.choices)
    reason = models.TextField()

    class Meta:
        db_table = "llm_budget_decisions"
        constraints = [
            models.CheckConstraint(
                condition=Q(decision__in=Decision.values), name="llm_budget_decisions_valid"
            ),
        ]
        indexes = [models.Index("tenant", F("created_at").desc(), name="budget_decisions_tenant_time")]

    def __str__(self) -> str:
        return f"{self.decision} {self.endpoint} {self.request_id}"


class BudgetAlert(models.Model):
    """Settled spend crossed `threshold_percent` of a month's cap: written once, in the
    transaction of the call that crossed it."""

    id = uuid_pk()
    tenant = tenant_fk("budget_alerts")
    month_start = models.DateTimeField()
    threshold_percent = models.SmallIntegerField()
    spent_micros = models.BigIntegerField(help_text="Settled spend just after the crossing call.")
    cap_micros = models.BigIntegerField()
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "llm_budget_alerts"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "month_start", "threshold_percent"],
                name="llm_budget_alerts_once_per_threshold",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.threshold_percent}% of {self.month_start:%Y-%m}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"


class AlertChannel(models.TextChoices):
    EMAIL = "email"
    WEBHOOK = "webhook"


class AlertDelivery(models.Model):
    """One channel's delivery of an alert: retried until delivered; attempts and the last
    error are kept for operators."""

    id = uuid_pk()
    tenant = tenant_fk("alert_deliveries")
    alert = models.ForeignKey(
        BudgetAlert, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    channel = models.TextField(choices=AlertChannel.choices)
    target = models.TextField(help_text="The address or URL it goes to.")
    status = models.TextField(choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.IntegerField(default=0, db_default=0)
    last_error = models.TextField(blank=True, default="", db_default="")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "llm_alert_deliveries"
        verbose_name_plural = "alert deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "alert", "channel"], name="llm_alert_deliveries_alert_channel_uniq"
            ),
            models.CheckConstraint(
                condition=Q(status__in=DeliveryStatus.values), name="llm_alert_deliveries_status_valid"
            ),
        ]
        indexes = [
            models.Index(
                "tenant",
                "status",
                name="alert_deliveries_pending",
                condition=Q(status=DeliveryStatus.PENDING),
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.target} ({self.status})"
