"""Smoke tests: the pages render, a write is read back, dbhealth exits 0."""

from __future__ import annotations

import json
import uuid

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from orders.models import Order

pytestmark = pytest.mark.django_db(databases="__all__")


def test_list_renders_empty(client: Client) -> None:
    response = client.get(reverse("order-list"))
    assert response.status_code == 200
    assert b"No orders yet" in response.content


def test_create_form_renders(client: Client) -> None:
    response = client.get(reverse("order-create"))
    assert response.status_code == 200
    assert b'name="customer"' in response.content


def test_form_write_is_read_back(client: Client) -> None:
    key = uuid.uuid4().hex
    response = client.post(
        reverse("order-create"), {"key": key, "customer": "Ada", "item": "lamp", "quantity": 2}
    )
    assert response.status_code == 302
    order = Order.objects.get(key=key)
    assert response["Location"] == reverse("order-detail", args=[order.pk])
    detail = client.get(response["Location"])
    assert detail.status_code == 200
    assert b"lamp" in detail.content and b"Ada" in detail.content
    listing = client.get(reverse("order-list"))
    assert b"lamp" in listing.content


def test_resubmitted_form_is_one_order(client: Client) -> None:
    data = {"key": uuid.uuid4().hex, "customer": "Ada", "item": "lamp", "quantity": 1}
    assert client.post(reverse("order-create"), data).status_code == 302
    again = client.post(reverse("order-create"), data)
    assert again.status_code == 200  # the form shows the duplicate key instead
    assert Order.objects.filter(key=data["key"]).count() == 1


def test_api_write_is_read_back(client: Client) -> None:
    key = uuid.uuid4().hex
    created = client.post(
        reverse("api-orders"),
        json.dumps({"key": key, "customer": "Bob", "item": "chair", "quantity": 3}),
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["key"] == key and body["served_by"]["alias"] == "default"
    read = client.get(reverse("api-order", args=[key]))
    assert read.status_code == 200
    assert read.json()["item"] == "chair"
    latest = client.get(reverse("api-orders")).json()
    assert [o["key"] for o in latest["orders"]] == [key]
    assert latest["served_by"]["vendor"] in {"sqlite", "postgresql", "mysql"}


@pytest.mark.django_db(transaction=True, databases="__all__")  # the view runs in autocommit
def test_api_duplicate_key_is_refused(client: Client) -> None:
    data = {"key": uuid.uuid4().hex, "customer": "Bob", "item": "chair"}
    assert client.post(reverse("api-orders"), data).status_code == 201
    assert client.post(reverse("api-orders"), data).status_code == 409
    assert Order.objects.filter(key=data["key"]).count() == 1


def test_api_unknown_key_is_404(client: Client) -> None:
    assert client.get(reverse("api-order", args=["nope"])).status_code == 404


def test_api_rejects_invalid_input(client: Client) -> None:
    response = client.post(reverse("api-orders"), {"key": "k"})
    assert response.status_code == 400
    assert not Order.objects.exists()


def test_health_endpoint_answers(client: Client) -> None:
    response = client.get("/health/")
    assert response.status_code == 200


def test_dbhealth_exits_zero() -> None:
    try:
        call_command("dbhealth")
    except SystemExit as exc:  # the command reports its state through its exit status
        assert exc.code in (0, None)
