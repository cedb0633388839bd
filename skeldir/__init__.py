"""The Django project: settings, the Celery app, URLs, tenancy, logs. It never imports the app `llm`."""
