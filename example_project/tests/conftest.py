"""The example project's tests run with ``shop.settings_test`` (see pytest.ini)."""

from __future__ import annotations
