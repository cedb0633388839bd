from django.urls import path

from llm.api import api

urlpatterns = [path("", api.urls)]
