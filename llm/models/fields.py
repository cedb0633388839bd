"""Field and constraint helpers every table of the app shares."""

import uuid

from django.contrib.postgres.functions import RandomUUID
from django.db import models
from django.db.models import Q


def uuid_pk() -> models.UUIDField:
    return models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID(), editable=False)


def tenant_fk(related_name: str) -> models.ForeignKey:
    # db_index=False: every table's composite indexes lead with tenant_id already.
    # The database-level ON DELETE CASCADE is added in migration 0001 (Django 5.2 cannot say it).
    return models.ForeignKey(
        "llm.Tenant", on_delete=models.CASCADE, related_name=related_name, db_index=False
    )


def non_negative(table: str, *fields: str) -> list[models.CheckConstraint]:
    return [
        models.CheckConstraint(condition=Q(**{f"{field}__gte": 0}), name=f"{table}_{field}_non_negative")
        for field in fields
    ]


def new_request_id() -> str:
    """A job created without a client's request_id (the ORM, the admin) still gets a unique one."""
    return str(uuid.uuid4())
