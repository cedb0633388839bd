from django.urls import path

from llm import views

app_name = "llm"

urlpatterns = [
    path("costs/current", views.current_month_costs, name="costs-current"),
]
