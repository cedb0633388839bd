"""Budget alerts (issue 13, item 5): written exactly once per (tenant, month, threshold) by the
call that crosses it, then delivered, with real parts: emails through Django's own SMTP backend
to a real SMTP server, webhooks to a real HTTP server, both on local ports (servers.py), by the
real Celery task, retried until delivered.

Calls go through `record_route_call` (admission, then settlement in the call's transaction): a
test model costs exactly 1 µUSD per output token, so each call costs what the test says.
"""

import datetime
import hashlib
import hmac
import json
import re
import socket
import threading
import time
from contextlib import contextmanager

import pytest
from celery import signals
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connections, transaction
from django.db.models.functions import Now

from llm import tasks
from llm.models import AlertChannel, AlertDelivery, BudgetAlert, DeliveryStatus, Tenant
from llm.payloads import LLMTaskPayload
from llm.selectors import current_utc_month
from llm.services import (
    DeliveryFailed,
    configure_alerts,
    deliver_alert,
    resend_pending_deliveries,
    route_request,
    set_budget,
)
from llm.services.alerts import record_threshold_alerts
from llm.tests.factories import payload_data, record_route_call
from skeldir.tenancy import tenant_context

# Transactional: the delivery tasks are sent when the call's transaction really commits, and
# the test models' prices, written by the owner connection, must be visible to the runtime one.
pytestmark = pytest.mark.django_db(transaction=True)

EMAIL = "ops@tenant.example"
DOLLAR = 1_000_000  # µUSD


def verify_webhook(secret: str, headers, body: bytes, *, tolerance_seconds: int = 300) -> bool:
    """What a receiver does (the README's snippet): recompute the signature of
    "<timestamp>.<body>" under its secret, compare in constant time, refuse stale timestamps."""
    timestamp = headers["X-Skeldir-Timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", headers["X-Skeldir-Signature"]) and (
        abs(time.time() - int(timestamp)) <= tolerance_seconds
    )


@contextmanager
def delivery_tasks_held():
    """An atomic block whose delivery tasks are taken out of its on-commit callbacks just
    before it commits: its rows commit, and the tasks it would have sent are handed over,
    unsent (each is `task.apply_async(...)`, for the test to call when it wants it sent)."""
    held = []
    connection = transaction.get_connection()
    with transaction.atomic():
        start = len(connection.run_on_commit)
        yield held
        callbacks = connection.run_on_commit[start:]
        held.extend(
            func for _, func, _ in callbacks if func.__qualname__.startswith("enqueue_task_on_commit")
        )
        connection.run_on_commit[start:] = [c for c in callbacks if c[1] not in held]


def alerts_of(tenant) -> list[BudgetAlert]:
    with tenant_context(tenant.id):
        return list(BudgetAlert.objects.order_by("threshold_percent"))


def deliveries_of(tenant) -> list[AlertDelivery]:
    with tenant_context(tenant.id):
        return list(
            AlertDelivery.objects.select_related("alert").order_by("alert__threshold_percent", "channel")
        )


def emailed_thresholds(smtp_server) -> list[int]:
    """The thresholds named by the subjects of the emails received, in order."""
    return sorted(int(re.search(r"(\d+)% of", m.message["Subject"])[1]) for m in smtp_server.received)


def month_label() -> str:
    return f"{current_utc_month():%Y-%m}"


# Email, through the SMTP backend to a real SMTP server


def test_a_crossed_threshold_is_emailed_to_the_tenant_through_a_real_smtp_server(
    tenant_a, smtp_server, run_tasks_eagerly
):
    configure_alerts(tenant_id=tenant_a.id, email=EMAIL, webhook_url=None)
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=DOLLAR, thresholds=(50, 80, 100))
    record_route_call(tenant_a, cost_micros=600_000)

    [alert] = alerts_of(tenant_a)
    assert (alert.threshold_percent, alert.spent_micros, alert.cap_micros) == (50, 600_000, DOLLAR)
    [mail] = smtp_server.received
    assert mail.rcpt_tos == [EMAIL]
    assert mail.message["To"] == EMAIL
    assert mail.message["From"] == settings.DEFAULT_FROM_EMAIL
    subject, body = mail.message["Subject"], mail.message.get_content()
    assert "50%" in subject and month_label() in subject
    assert f"{month_label()} has reached $0.60, 50% of its $1.00 cap" in body
    assert str(alert.id) in body
    [delivery] = deliveries_of(tenant_a)
    assert (delivery.channel, delivery.target, delivery.status) == ("email", EMAIL, "delivered")
    assert (delivery.attempts, delivery.last_error) == (1, "")
    assert delivery.delivered_at is not None


def test_each_threshold_is_alerted_once_however_many_calls_cross_or_pass_it(
    tenant_a, smtp_server, run_tasks_eagerly
):
    configure_alerts(tenant_id=tenant_a.id, email=EMAIL, webhook_url=None)
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=DOLLAR, thresholds=(50, 80, 100))
    record_route_call(tenant_a, cost_micros=850_000)  # 50 and 80 at once
    record_route_call(tenant_a, cost_micros=100_000)  # 95%: nothing new
    record_route_call(tenant_a, cost_micros=50_000)  # exactly the cap: 100
    assert [(a.threshold_percent, a.spent_micros) for a in alerts_of(tenant_a)] == [
        (50, 850_000),
        (80, 850_000),
        (100, DOLLAR),
    ]
    assert emailed_thresholds(smtp_server) == [50, 80, 100]
    assert all(d.status == "delivered" and d.attempts == 1 for d in deliveries_of(tenant_a))


# Webhooks, to a real HTTP server


def test_a_crossed_threshold_is_posted_as_signed_json_to_the_webhook(
    tenant_a, webhook_server, run_tasks_eagerly
):
    secret = configure_alerts(tenant_id=tenant_a.id, email=None, webhook_url=webhook_server.url())
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=DOLLAR, thresholds=(50, 80, 100))
    record_route_call(tenant_a, cost_micros=800_000)

    posts = webhook_server.posts()
    assert [p.path for p in posts] == ["/hooks/budget", "/hooks/budget"]
    for post in posts:
        assert post.headers["Content-Type"] == "application/json"
        assert verify_webhook(secret, post.headers, post.body)
        assert not verify_webhook(secret, post.headers, post.body.replace(b"800000", b"100000"))
        assert not verify_webhook("whsec_someone-else", post.headers, post.body)
    bodies = sorted((json.loads(p.body) for p in posts), key=lambda b: b["threshold_percent"])
    alerts = alerts_of(tenant_a)
    assert bodies == [
        {
            "type": "budget.threshold_crossed",
            "alert_id": str(alert.id),
            "tenant_id": str(tenant_a.id),
            "month": month_label(),
            "threshold_percent": alert.threshold_percent,
            "spent_micros": 800_000,
            "cap_micros": DOLLAR,
            "spent_usd": "$0.80",
            "cap_usd": "$1.00",
        }
        for alert in alerts
    ]
    assert all(d.status == "delivered" for d in deliveries_of(tenant_a))


def test_a_webhook_that_fails_twice_http_500_is_delivered_on_the_third_try_with_a_valid_signature(
    tenant_a, webhook_server, run_tasks_eagerly
):
    secret = configure_alerts(tenant_id=tenant_a.id, email=None, webhook_url=webhook_server.url())
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=DOLLAR, thresholds=(50,))
    with delivery_tasks_held() as sent:
        record_route_call(tenant_a, cost_micros=500_000)
    [delivery] = deliveries_of(tenant_a)
    assert len(sent) == 1  # one delivery task, sent when the call's transaction commits
    assert (delivery.status, delivery.attempts) == ("pending", 0)

    webhook_server.statuses.extend([500, 500])
    seen_at_retries = []

    def on_retry(request, reason, **_):
        [row] = deliveries_of(tenant_a)
        seen_at_retries.append((row.attempts, row.status, row.last_error, request.retries, reason.when))

    signals.task_retry.connect(on_retry, weak=False)
    try:
        # The task the commit would have sent, sent now: the real task, run eagerly by Celery
        # (`apply`), which runs each retry its autoretry asks for in turn.
        result = sent[0]()
    finally:
        signals.task_retry.disconnect(on_retry)

    assert result.successful(), result.traceback
    assert result.get() == {"delivery_id": str(delivery.id), "delivered": True}
    # Each failure was recorded before the retry, and each retry waited a backoff of up to
    # 5 s x 2^retries (full jitter).
    assert [row[:4] for row in seen_at_retries] == [
        (1, "pending", "DeliveryFailed: HTTP 500", 0),
        (2, "pending", "DeliveryFailed: HTTP 500", 1),
    ]
    assert all(0 <= when <= 5 * 2**retries for *_, retries, when in seen_at_retries)
    posts = webhook_server.posts()
    assert len(posts) == 3
    assert all(verify_webhook(secret, post.headers, post.body) for post in posts)
    assert len({post.body for post in posts}) == 1  # the same alert each time
    [delivery] = deliveries_of(tenant_a)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 3, "")
    assert delivery.delivered_at is not None and delivery.last_attempt_at is not None


def test_a_delivery_that_keeps_failing_is_retried_with_backoff_then_left_pending_for_beat(
    tenant_a, webhook_server
):
    task = tasks.deliver_budget_alert
    assert DeliveryFailed in task.autoretry_for
    assert (task.retry_backoff, task.retry_backoff_max, task.retry_jitter) == (5, 600, True)
    configure_alerts(tenant_id=tenant_a.id, email=None, webhook_url=webhook_server.url())
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=DOLLAR, thresholds=(50,))
    with delivery_tasks_held():
        record_route_call(tenant_a, cost_micros=500_000)
    [delivery] = deliveries_of(tenant_a)
    webhook_server.statuses.extend([503] * (task.max_retries + 1))

    result = task.apply(kwargs={"tenant_id": str(tenant_a.id), "delivery_id": str(delivery.id)})

    assert result.failed() and isinstance(result.result, DeliveryFailed)
    [delivery] = deliveries_of(tenant_a)
    assert (delivery.status, delivery.attempts) == ("pending", task.max_retries + 1)
    assert delivery.last_error == "DeliveryFailed: HTTP 503"
    assert len(webhook_server.posts()) == task.max_retries + 1


def test_an_unreachable_mail_relay_fails_the_attempt_and_the_next_one_delivers(
    tenant_a, smtp_server, settings
):
    configure_alerts(tenant_id=tenant_a.id, email=EMAIL, webhook_url=None)
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=DOLLAR, thresholds=(50,))
    with delivery_tasks_held():
        record_route_call(tenant_a, cost_micros=500_000)
    [delivery] = deliveries_of(tenant_a)
    relay_port, settings.EMAIL_PORT = settings.EMAIL_PORT, free_port()  # nothing listens there

    with pytest.raises(DeliveryFailed, match="ConnectionRefusedError"):
        deliver_alert(tenant_id=tenant_a.id, delivery_id=delivery.id)
    [delivery] = deliveries_of(tenant_a)
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.last_error.startswith("ConnectionRefusedError")

    settings.EMAIL_PORT = relay_port
    assert deliver_alert(tenant_id=tenant_a.id, delivery_id=delivery.id) is True
    [delivery] = deliveries_of(tenant_a)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 2, "")
    assert len(smtp_server.received) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_redirect_is_not_a_delivery(tenant_a, webhook_server):
    """urllib would follow a 302 with a GET without the body: the webhook would count as
    delivered though nobody received it."""
    configure_alerts(tenant_id=tenant_a.id, email=None, webhook_url=webhook_server.url())
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=DOLLAR, thresholds=(50,))
    with delivery_tasks_held():
        record_route_call(tenant_a, cost_micros=500_000)
    [delivery] = deliveries_of(tenant_a)
    webhook_server.statuses.append((302, "/elsewhere"))

    with pytest.raises(DeliveryFailed, match="HTTP 302"):
        deliver_alert(tenant_id=tenant_a.id, delivery_id=delivery.id)

    assert [(r.method, r.path) for r in webhook_server.received] == [("POST", "/hooks/budget")]
    [delivery] = deliveries_of(tenant_a)
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        "pending",
        1,
        "DeliveryFailed: HTTP 302",
    )


def test_a_pending_delivery_goes_where_the_tenants_alerts_go_now(tenant_a, webhook_server, smtp_server):
    """A webhook moved, or an email address changed, after the alert was written: the
    delivery goes to the new place, signed with the new secret; a channel turned off since is
    not sent (and never signed with an empty secret)."""
    configure_alerts(
        tenant_id=tenant_a.id, email="old@tenant.example", webhook_url=webhook_server.url("/old")
    )
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=DOLLAR, thresholds=(50, 80))
    with delivery_tasks_held():
        record_route_call(tenant_a, cost_micros=500_000)
    new_secret = configure_alerts(tenant_id=tenant_a.id, email=EMAIL, webhook_url=webhook_server.url("/new"))

    for delivery in deliveries_of(tenant_a):
        assert deliver_alert(tenant_id=tenant_a.id, delivery_id=delivery.id) is True
    [post] = webhook_server.posts()
    assert post.path == "/new" and verify_webhook(new_secret, post.headers, post.body)
    assert [mail.rcpt_tos for mail in smtp_server.received] == [[EMAIL]]
    assert {d.channel: d.target for d in deliveries_of(tenant_a)} == {
        "email": EMAIL,
        "webhook": webhook_server.url("/new"),
    }

    with delivery_tasks_held():
        record_route_call(tenant_a, cost_micros=300_000)  # 80%
    configure_alerts(tenant_id=tenant_a.id, email="", webhook_url="")
    for delivery in deliveries_of(tenant_a):
        if delivery.alert.threshold_percent == 80:
            assert deliver_alert(tenant_id=tenant_a.id, delivery_id=delivery.id) is False
    assert len(webhook_server.posts()) == 1 and len(smtp_server.received) == 1
    turned_off = [d for d in deliveries_of(tenant_a) if d.alert.threshold_percent == 80]
    assert {(d.status, d.attempts) for d in turned_off} == {("pending", 1)}
    assert all("no longer" in d.last_error for d in turned_off)
    # ... and beat leaves it alone until the tenant configures the channel again.
    assert resend_pending_deliveries(older_than=datetime.timedelta(0)) == 0


# Beat's re-send


def test_beat_resends_only_pending_deliveries_whose_last_attempt_is_older_than_the_setting(
    tenant_a, smtp_server, settings, run_tasks_eagerly
):
    configure_alerts(tenant_id=tenant_a.id, email=EMAIL, webhook_url=None)
    with delivery_tasks_held(), tenant_context(tenant_a.id):
        record_threshold_alerts(
            tenant_id=tenant_a.id,
            month_start=datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC),
            spent_before=0,
            spent_after=DOLLAR,
            cap=DOLLAR,
            thresholds=(10, 20, 30, 40),
        )
        by_threshold = {d.alert.threshold_percent: d for d in AlertDelivery.objects.select_related("alert")}
        ago = {10: 700, 20: 60, 40: 7_000}  # seconds since the last attempt; 30 never tried
        for threshold, seconds in ago.items():
            AlertDelivery.objects.filter(id=by_threshold[threshold].id).update(
                attempts=1,
                last_attempt_at=Now() - datetime.timedelta(seconds=seconds),
                last_error="SMTPServerDisconnected: Connection unexpectedly closed",
            )
        AlertDelivery.objects.filter(id=by_threshold[40].id).update(
            status=DeliveryStatus.DELIVERED, delivered_at=Now()
        )
    settings.LLM_ALERT_RESEND_AFTER_SECONDS = 600

    result = tasks.resend_budget_alerts.apply()  # its tasks run (eagerly) as it commits
    assert result.get() == {"sent": 1}
    [mail] = smtp_server.received
    assert "10%" in mail.message["Subject"]
    states = {d.alert.threshold_percent: (d.status, d.attempts) for d in deliveries_of(tenant_a)}
    assert states == {
        10: ("delivered", 2),  # pending, last tried 700 s ago: sent again
        20: ("pending", 1),  # tried 60 s ago: its own retries are still on it
        30: ("pending", 0),  # just written: its task is on its way
        40: ("delivered", 1),  # delivered: never again
    }

    # Once the setting's time has passed, the never-tried one is sent too.
    settings.LLM_ALERT_RESEND_AFTER_SECONDS = 0
    assert tasks.resend_budget_alerts.apply().get() == {"sent": 2}
    assert {d.alert.threshold_percent for d in deliveries_of(tenant_a) if d.status == "pending"} == set()


# Tenants without channels


def test_a_tenant_without_email_or_webhook_gets_alert_rows_but_no_deliveries(tenant_a):
    assert (tenant_a.notification_email, tenant_a.webhook_url) == ("", "")
    set_budget(tenant_id=tenant_a.id, monthly_cap_micros=DOLLAR, thresholds=(50, 80, 100))
    with delivery_tasks_held() as sent:
        record_route_call(tenant_a, cost_micros=DOLLAR)
    assert [a.threshold_percent for a in alerts_of(tenant_a)] == [50, 80, 100]
    assert deliveries_of(tenant_a) == []
    assert sent == []


# Exactly once under concurrency

THREADS = 64
CALL_MICROS = 1_000


@pytest.mark.django_db(transaction=True)
def test_64_concurrent_calls_crossing_every_threshold_alert_and_deliver_each_exactly_once(
    tenant_factory, smtp_server, webhook_server, run_tasks_eagerly
):
    tenant = tenant_factory.create()
    secret = configure_alerts(tenant_id=tenant.id, email=EMAIL, webhook_url=webhook_server.url())
    # The 64 calls fill the cap exactly: none is blocked, and 50, 80 and 100% are each
    # crossed by one of them (the 32nd, the 52nd and the 64th to settle).
    set_budget(tenant_id=tenant.id, monthly_cap_micros=THREADS * CALL_MICROS, thresholds=(50, 80, 100))
    payloads = [
        LLMTaskPayload.parse(
            payload_data(
                tenant.id,
                request_id=f"burst-{i}",
                prompt={"model": "test-small", "output_tokens": CALL_MICROS},
            )
        )
        for i in range(THREADS)
    ]
    start, errors = threading.Barrier(THREADS, timeout=30), []

    def work(payload):
        try:
            start.wait()
            route_request(payload)  # its alerts' delivery tasks run (eagerly) once it commits
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors[:3]

    alerts = alerts_of(tenant)
    assert [(a.threshold_percent, a.spent_micros) for a in alerts] == [
        (50, 32_000),
        (80, 52_000),
        (100, 64_000),
    ]
    deliveries = deliveries_of(tenant)
    assert sorted((d.alert.threshold_percent, d.channel) for d in deliveries) == [
        (t, c) for t in (50, 80, 100) for c in (AlertChannel.EMAIL, AlertChannel.WEBHOOK)
    ]
    # One task per delivery: each attempted once, and delivered.
    assert {(d.status, d.attempts) for d in deliveries} == {("delivered", 1)}
    assert len(smtp_server.received) == 3
    assert emailed_thresholds(smtp_server) == [50, 80, 100]
    posts = webhook_server.posts()
    assert len(posts) == 3
    assert all(verify_webhook(secret, p.headers, p.body) for p in posts)
    assert sorted(json.loads(p.body)["alert_id"] for p in posts) == sorted(str(a.id) for a in alerts)


# configure_alerts


def tenant_alert_settings(tenant) -> tuple[str, str, str]:
    return Tenant.objects.values_list("notification_email", "webhook_url", "webhook_secret").get(id=tenant.id)


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--email", "not-an-address", "valid email"),
        ("--email", "ops@tenant.example\nBcc: everyone@example.com", "valid email"),
        ("--email", f"{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 63}.example", "at most 254 characters"),
        ("--webhook-url", "not a url", "valid URL"),
        ("--webhook-url", "ftp://hooks.example/budget", "valid URL"),
        ("--webhook-url", "file:///etc/passwd", "valid URL"),
        ("--webhook-url", "javascript:alert(1)", "valid URL"),
        ("--webhook-url", "https://hooks.example/" + "x" * 2000, "at most 2000 characters"),
    ],
)
def test_configure_alerts_refuses_a_bad_email_or_url_and_writes_nothing(tenant_a, option, value, problem):
    call_command("configure_alerts", tenant=str(tenant_a.id), email="first@tenant.example")
    call_command("configure_alerts", tenant=str(tenant_a.id), webhook_url="https://hooks.example/a")
    before = tenant_alert_settings(tenant_a)

    # The other option is valid: nothing of the command is written, not even that.
    other = {"--email": ("webhook_url", "https://hooks.example/b"), "--webhook-url": ("email", EMAIL)}[option]
    with pytest.raises(CommandError, match=f"(?s){problem}.*Nothing was changed"):
        call_command("configure_alerts", option, value, tenant=str(tenant_a.id), **dict([other]))

    assert tenant_alert_settings(tenant_a) == before


def test_a_new_webhook_url_rotates_the_secret_which_is_shown_once(tenant_a, capsys):
    def configure(*args):
        call_command("configure_alerts", "--tenant", tenant_a.name, *args)
        return capsys.readouterr().out

    out = configure("--webhook-url", "https://hooks.example/a")
    _, url, first_secret = tenant_alert_settings(tenant_a)
    assert url == "https://hooks.example/a" and first_secret.startswith("whsec_")
    assert first_secret in out and "(no email)" in out

    out = configure("--email", EMAIL)  # the webhook stays, its secret too, and is not shown
    assert tenant_alert_settings(tenant_a) == (EMAIL, "https://hooks.example/a", first_secret)
    assert "whsec_" not in out
    assert EMAIL in out and "https://hooks.example/a" in out  # where alerts go now, all of it

    out = configure("--webhook-url", "https://hooks.example/b")
    _, _, second_secret = tenant_alert_settings(tenant_a)
    assert second_secret != first_secret and second_secret in out and first_secret not in out

    out = configure("--webhook-url", "")
    assert tenant_alert_settings(tenant_a) == (EMAIL, "", "")
    assert "whsec_" not in out and "(no webhook)" in out
