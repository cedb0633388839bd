from django.apps import AppConfig


class LLMConfig(AppConfig):
    name = "llm"
    verbose_name = "LLM platform"
    default_auto_field = "django.db.models.BigAutoField"
