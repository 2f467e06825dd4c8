"""HTML pages (list, detail, create) and the JSON API the demo's load generator uses."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.db import DatabaseError, IntegrityError, router
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from orders.forms import ApiOrderForm, OrderForm
from orders.models import Order
from orders.served import served_by

log = logging.getLogger(__name__)


def order_list(request: HttpRequest) -> HttpResponse:
    """Show the latest orders."""
    orders = list(Order.objects.all()[:50])
    return render(request, "orders/order_list.html", {"orders": orders})


def order_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show one order."""
    order = get_object_or_404(Order, pk=pk)
    return render(request, "orders/order_detail.html", {"order": order})


@require_http_methods(["GET", "POST"])
def order_create(request: HttpRequest) -> HttpResponse:
    """Show the order form, or create the order and show it."""
    form = OrderForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        order = form.save()
        return redirect("order-detail", pk=order.pk)
    return render(request, "orders/order_form.html", {"form": form})


def _db_error(exc: DatabaseError) -> JsonResponse:
    # Tell the client what kind of failure it was: after "outcome unknown" the order may or
    # may not exist, and the client should look it up by its key instead of resending.
    unknown = type(exc).__name__ == "OutcomeUnknown"
    log.warning("database error: %s: %s", type(exc).__name__, exc)
    return JsonResponse({"error": type(exc).__name__, "outcome_unknown": unknown}, status=503)


def _as_json(order: Order) -> dict[str, Any]:
    return {
        "id": order.pk,
        "key": order.key,
        "customer": order.customer,
        "item": order.item,
        "quantity": order.quantity,
    }


@csrf_exempt  # a machine API without sessions; the HTML form keeps CSRF protection
@require_http_methods(["GET", "POST"])
def api_orders(request: HttpRequest) -> JsonResponse:
    """GET: the latest orders. POST (JSON or form): create an order with the client's key."""
    if request.method == "POST":
        return _api_create(request)
    qs = Order.objects.all()
    try:
        latest = [_as_json(o) for o in qs[:20]]
    except DatabaseError as exc:
        return _db_error(exc)
    return JsonResponse({"orders": latest, "served_by": served_by(qs.db)})


@csrf_exempt
@require_http_methods(["POST"])
def api_maria_orders(request: HttpRequest) -> JsonResponse:
    """POST: create an order on the MariaDB alias ("maria"), with the client's key."""
    return _api_create(request, using="maria")


def api_maria_order(request: HttpRequest, key: str) -> JsonResponse:
    """Return the order with client key ``key`` from the MariaDB alias."""
    return api_order(request, key, using="maria")


def _api_create(request: HttpRequest, using: str | None = None) -> JsonResponse:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            return JsonResponse({"error": "invalid JSON"}, status=400)
    else:
        data = request.POST
    form = ApiOrderForm(data)
    if not form.is_valid():
        return JsonResponse({"error": form.errors.get_json_data()}, status=400)
    fields = form.cleaned_data
    manager = Order.objects.db_manager(using) if using else Order.objects
    try:
        order = manager.create(
            key=fields["key"],
            customer=fields["customer"],
            item=fields["item"],
            quantity=fields["quantity"] or 1,
        )
    except IntegrityError:
        # The unique key stopped a second insert of the same order.
        return JsonResponse({"error": "duplicate key"}, status=409)
    except DatabaseError as exc:
        return _db_error(exc)
    alias = using or router.db_for_write(Order, instance=order)
    return JsonResponse({**_as_json(order), "served_by": served_by(alias)}, status=201)


def api_order(request: HttpRequest, key: str, using: str | None = None) -> JsonResponse:
    """Return the order with client key ``key`` (404 when there is none)."""
    qs = (Order.objects.using(using) if using else Order.objects).filter(key=key)
    try:
        order = qs.first()
    except DatabaseError as exc:
        return _db_error(exc)
    served = served_by(qs.db)
    if order is None:
        return JsonResponse({"error": "not found", "served_by": served}, status=404)
    return JsonResponse({**_as_json(order), "served_by": served})
