"""Budget alerts: written exactly once when settled spend crosses a threshold of the month's
cap, then delivered by email (Django's SMTP backend, to the tenant's notification_email) and
by a signed webhook (the tenant's webhook_url), each retried until it is delivered.

The alert row is written in the transaction of the call that crossed the threshold, unique
per (tenant, month, threshold): of any number of concurrent crossings, one writes it. The
delivery task is sent when that transaction commits; the beat job re-sends what is left.

Webhooks are POSTed as JSON with `X-Skeldir-Timestamp` and `X-Skeldir-Signature:
sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the tenant's webhook secret>`, so a
receiver can check both who sent it and that it is fresh.
"""

import datetime
import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
import uuid

from django.conf import settings
from django.core.mail import send_mail
from django.core.validators import URLValidator
from django.db import connection
from django.db.models import F
from django.db.models.functions import Coalesce, Now

from llm import selectors, sql
from llm.models import AlertChannel, AlertDelivery, BudgetAlert, DeliveryStatus, Tenant
from llm.money import format_micros
from llm.services.dispatch import enqueue_task_on_commit
from skeldir.tenancy import tenant_context

logger = logging.getLogger(__name__)

DELIVER_TASK_NAME = "llm.deliver_budget_alert"
SIGNATURE_HEADER = "X-Skeldir-Signature"
TIMESTAMP_HEADER = "X-Skeldir-Timestamp"


class DeliveryFailed(Exception):
    """One attempt failed; the task retries with backoff, and the beat job later."""


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(*, secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def crossed_thresholds(*, spent_before: int, spent_after: int, cap: int, thresholds) -> list[int]:
    """The thresholds (percent of `cap`) that spend passed on its way from before to after."""
    return [t for t in thresholds if spent_before * 100 < t * cap <= spent_after * 100]


def record_threshold_alerts(
    *,
    tenant_id: uuid.UUID,
    month_start: datetime.datetime,
    spent_before: int,
    spent_after: int,
    cap: int,
    thresholds,
) -> list[BudgetAlert]:
    """In the crossing call's transaction: the alerts it crossed, each written once, with one
    delivery per configured channel, sent when the transaction commits."""
    crossed = crossed_thresholds(
        spent_before=spent_before, spent_after=spent_after, cap=cap, thresholds=thresholds
    )
    if not crossed:
        return []
    tenant = Tenant.objects.get(id=tenant_id)
    written = []
    for threshold in crossed:
        with connection.cursor() as cursor:
            cursor.execute(sql.INSERT_BUDGET_ALERT_SQL, [tenant_id, month_start, threshold, spent_after, cap])
            row = cursor.fetchone()
        if row is None:
            continue
        alert = BudgetAlert.objects.get(id=row[0])
        for channel, target in (
            (AlertChannel.EMAIL, tenant.notification_email),
            (AlertChannel.WEBHOOK, tenant.webhook_url),
        ):
            if target:
                delivery = AlertDelivery.objects.create(
                    tenant_id=tenant_id, alert=alert, channel=channel, target=target
                )
                enqueue_task_on_commit(
                    DELIVER_TASK_NAME, tenant_id=str(tenant_id), delivery_id=str(delivery.id)
                )
        logger.warning(
            "tenant %s crossed %s%% of its %s budget (%s of %s)",
            tenant_id,
            threshold,
            f"{month_start:%Y-%m}",
            format_micros(spent_after),
            format_micros(cap),
        )
        written.append(alert)
    return written


def alert_message(alert: BudgetAlert, tenant: Tenant) -> dict:
    return {
        "type": "budget.threshold_crossed",
        "alert_id": str(alert.id),
        "tenant_id": str(tenant.id),
        "month": f"{alert.month_start:%Y-%m}",
        "threshold_percent": alert.threshold_percent,
        "spent_micros": alert.spent_micros,
        "cap_micros": alert.cap_micros,
        "spent_usd": format_micros(alert.spent_micros),
        "cap_usd": format_micros(alert.cap_micros),
    }


def current_target(tenant: Tenant, channel: str) -> str:
    """Where the tenant's alerts of this channel go now ('' once the channel is turned off)."""
    return tenant.notification_email if channel == AlertChannel.EMAIL else tenant.webhook_url


def deliver(*, tenant_id: uuid.UUID, delivery_id: uuid.UUID) -> bool:
    """One attempt at one delivery; True once it is delivered (now or before). The attempt
    happens outside any transaction; its outcome is recorded after. Raises DeliveryFailed.

    It goes where the tenant's alerts of its channel go at the time of the attempt (a webhook
    moved since the alert was written gets it, signed with its new secret; `target` records
    where it went). A channel turned off since is not sent, and not retried: False."""
    with tenant_context(tenant_id):
        delivery = AlertDelivery.objects.select_related("alert", "tenant").filter(id=delivery_id).first()
    if delivery is None:
        logger.error("alert delivery %s of tenant %s does not exist", delivery_id, tenant_id)
        return False
    if delivery.status == DeliveryStatus.DELIVERED:
        return True
    target = current_target(delivery.tenant, delivery.channel)
    if not target:  # never sent to nowhere, nor signed with an empty secret
        _record_attempt(
            tenant_id, delivery_id, error=f"the tenant no longer has {delivery.channel} alerts: not sent"
        )
        return False
    message = alert_message(delivery.alert, delivery.tenant)
    error = ""
    try:
        if delivery.channel == AlertChannel.EMAIL:
            _send_email(target, message)
        else:
            _post_webhook(target, delivery.tenant.webhook_secret, message)
    except Exception as failure:  # any failure of the attempt is recorded and retried
        error = f"{type(failure).__name__}: {failure}"[:500]
    _record_attempt(tenant_id, delivery_id, error=error, delivered=not error, target=target)
    if error:
        raise DeliveryFailed(f"{delivery.channel} delivery {delivery_id} failed: {error}")
    return True


def _record_attempt(tenant_id, delivery_id, *, error: str, delivered: bool = False, target: str = "") -> None:
    outcome: dict = {"target": target} if target else {}
    if delivered:
        outcome.update(status=DeliveryStatus.DELIVERED, delivered_at=Now())
    with tenant_context(tenant_id):
        AlertDelivery.objects.filter(id=delivery_id).update(
            attempts=F("attempts") + 1, last_attempt_at=Now(), last_error=error, **outcome
        )


def _send_email(address: str, message: dict) -> None:
    send_mail(
        subject=f"LLM budget: {message['threshold_percent']}% of {message['month']}'s cap reached",
        message=(
            f"Your LLM spend for {message['month']} has reached {message['spent_usd']}, "
            f"{message['threshold_percent']}% of its {message['cap_usd']} cap.\n\n"
            f"Alert {message['alert_id']}."
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[address],
        fail_silently=False,
    )


def _post_webhook(url: str, secret: str, message: dict) -> None:
    body = json.dumps(message, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret=secret, timestamp=timestamp, body=body),
        },
    )
    try:
        with _WEBHOOK_OPENER.open(request, timeout=settings.LLM_ALERT_WEBHOOK_TIMEOUT_SECONDS) as response:
            if not 200 <= response.status < 300:
                raise DeliveryFailed(f"HTTP {response.status}")
    except urllib.error.HTTPError as failure:
        raise DeliveryFailed(f"HTTP {failure.code}") from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed attempt, not a delivery: urllib would follow a 301/302/303 with a
    GET without the body (and the signed alert), and count the next page's 200 as success."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises the 3xx as an HTTPError


_WEBHOOK_OPENER = urllib.request.build_opener(_NoRedirects)


def resend_pending_deliveries(*, older_than: datetime.timedelta) -> int:
    """Send again every delivery still pending `older_than` after its last attempt (or, never
    tried, after it was written with its alert): the beat job's safety net behind the task's
    own retries. A delivery whose channel the tenant has turned off waits until it is on again."""
    sent = 0
    for tenant_id in selectors.iter_tenant_ids():
        with tenant_context(tenant_id):
            stale = (
                AlertDelivery.objects.filter(status=DeliveryStatus.PENDING)
                .alias(last_tried_at=Coalesce("last_attempt_at", "alert__created_at"))
                .filter(last_tried_at__lte=Now() - older_than)
                .exclude(channel=AlertChannel.EMAIL, tenant__notification_email="")
                .exclude(channel=AlertChannel.WEBHOOK, tenant__webhook_url="")
            )
            for delivery_id in stale.values_list("id", flat=True):
                enqueue_task_on_commit(
                    DELIVER_TASK_NAME, tenant_id=str(tenant_id), delivery_id=str(delivery_id)
                )
                sent += 1
    return sent


def configure_alerts(*, tenant_id: uuid.UUID, email: str | None, webhook_url: str | None) -> str | None:
    """Set a tenant's alert email and/or webhook URL ('' clears it); a new webhook URL gets a
    new secret, returned once (it signs every webhook). Raises ValidationError for a malformed
    or overlong address or URL (http and https only), writing nothing."""
    email = email.strip() if email is not None else None
    webhook_url = webhook_url.strip() if webhook_url is not None else None
    if email:
        # The column's own validators too: an address or URL longer than the column would
        # otherwise fail in the database, as an error rather than a refusal.
        Tenant._meta.get_field("notification_email").run_validators(email)
    if webhook_url:
        URLValidator(schemes=["http", "https"])(webhook_url)
        Tenant._meta.get_field("webhook_url").run_validators(webhook_url)
    updates: dict = {}
    secret = None
    if email is not None:
        updates["notification_email"] = email
    if webhook_url is not None:
        updates["webhook_url"] = webhook_url
        secret = new_webhook_secret() if webhook_url else ""
        updates["webhook_secret"] = secret
    if updates:
        with tenant_context(tenant_id):  # the directory's rows are updated inside their tenant
            Tenant.objects.filter(id=tenant_id).update(updated_at=Now(), **updates)
    return secret or None
