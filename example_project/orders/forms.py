from __future__ import annotations

from django import forms

from orders.models import Order


class OrderForm(forms.ModelForm):  # type: ignore[type-arg]
    """Create an order; the key travels in a hidden field so a resubmitted form is one order."""

    class Meta:
        model = Order
        fields = ["key", "customer", "item", "quantity"]
        widgets = {"key": forms.HiddenInput()}


class ApiOrderForm(forms.Form):
    """Validate an API create without the ModelForm's unique check (a read before the write)."""

    key = forms.CharField(max_length=64)
    customer = forms.CharField(max_length=100)
    item = forms.CharField(max_length=100)
    quantity = forms.IntegerField(min_value=1, initial=1, required=False)
