from __future__ import annotations

from django.urls import path

from orders import views

urlpatterns = [
    path("", views.order_list, name="order-list"),
    path("orders/new/", views.order_create, name="order-create"),
    path("orders/<int:pk>/", views.order_detail, name="order-detail"),
    path("api/orders/", views.api_orders, name="api-orders"),
    path("api/orders/<str:key>/", views.api_order, name="api-order"),
    path("api/maria/orders/", views.api_maria_orders, name="api-maria-orders"),
    path("api/maria/orders/<str:key>/", views.api_maria_order, name="api-maria-order"),
]
