"""The price catalogue in the admin: staff with the view permission read it; superusers add
a period where the owner's connection is configured (the runtime role may only read prices).
History is never edited or deleted: a new period closes the model's open one."""

from django import forms
from django.contrib import admin, messages

from llm.models import ModelPrice
from llm.money import format_micros
from llm.services.prices import (
    PriceToAdd,
    add_price_period,
    check_price_period,
    owner_connection_configured,
)


class PriceForm(forms.ModelForm):
    class Meta:
        model = ModelPrice
        fields = [
            "model",
            "provider",
            "input_micros_per_mtok",
            "cached_input_micros_per_mtok",
            "output_micros_per_mtok",
            "request_fee_micros",
            "valid_from",
        ]

    def price(self) -> PriceToAdd:
        data = self.cleaned_data
        return PriceToAdd(**{field: data.get(field) for field in self.Meta.fields})

    def clean(self):
        cleaned = super().clean()
        if not self.errors and (problem := check_price_period(price=self.price())):
            raise forms.ValidationError(problem)
        return cleaned


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    form = PriceForm
    list_display = [
        "model",
        "provider",
        "input",
        "cached_input",
        "output",
        "request_fee",
        "valid_from",
        "valid_to",
    ]
    list_filter = ["provider", "model"]
    search_fields = ["model"]
    ordering = ["model", "-valid_from"]

    def has_add_permission(self, request):
        return request.user.is_superuser and owner_connection_configured()

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if request.user.is_superuser and not owner_connection_configured():
            extra_context = {
                **(extra_context or {}),
                "subtitle": "Read-only here: prices are written as the owner (manage.py load_prices "
                "with DATABASE_OWNER_URL).",
            }
        return super().changelist_view(request, extra_context)

    def save_model(self, request, obj: ModelPrice, form: PriceForm, change):
        row, created = add_price_period(price=form.price())  # checked by the form just before
        obj.pk, obj.valid_to, obj.created_at = row.pk, row.valid_to, row.created_at
        obj._state.adding = False
        if not created:
            messages.info(request, "That exact period was already in the catalogue; nothing changed.")

    @admin.display(description="input / Mtok", ordering="input_micros_per_mtok")
    def input(self, price: ModelPrice) -> str:
        return format_micros(price.input_micros_per_mtok)

    @admin.display(description="cached input / Mtok", ordering="cached_input_micros_per_mtok")
    def cached_input(self, price: ModelPrice) -> str:
        return format_micros(price.cached_input_micros_per_mtok)

    @admin.display(description="output / Mtok", ordering="output_micros_per_mtok")
    def output(self, price: ModelPrice) -> str:
        return format_micros(price.output_micros_per_mtok)

    @admin.display(description="per request", ordering="request_fee_micros")
    def request_fee(self, price: ModelPrice) -> str:
        return format_micros(price.request_fee_micros)
