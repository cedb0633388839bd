from django.apps import AppConfig


class LLMConfig(AppConfig):
    name = "llm"
    verbose_name = "LLM platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The Celery app, so that tasks sent from any Django process use its configuration,
        # and the tasks, so that services find them in its registry by name.
        import llm.tasks  # noqa: F401
        import skeldir.celery  # noqa: F401
