from __future__ import annotations

from django.urls import path

from livedemo import views

urlpatterns = [
    path("", views.dashboard, name="demo-dashboard"),
    path("state.json", views.state, name="demo-state"),
]
