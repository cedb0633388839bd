"""The Celery app: `celery -A skeldir worker -Q llm` and `celery -A skeldir beat`.
Configuration is the CELERY_* part of the Django settings."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skeldir.settings")

app = Celery("skeldir")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
