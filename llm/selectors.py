"""Reads. Tenant-scoped queries rely on the tenant in force (see `skeldir.tenancy`):
row-level security filters them, so they carry no tenant filter of their own."""

import datetime

from django.db import connection

from llm.api_keys import hash_api_key
from llm.models import LLMMonthlyCost, Tenant


def get_tenant_by_api_key(*, api_key: str) -> Tenant | None:
    return Tenant.objects.filter(api_key_hash=hash_api_key(api_key)).first()


def current_utc_month() -> datetime.date:
    """The first day of the current UTC month by the database clock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date")
        return cursor.fetchone()[0]


def get_monthly_cost(*, month: datetime.date) -> LLMMonthlyCost | None:
    return LLMMonthlyCost.objects.filter(month=month).first()
