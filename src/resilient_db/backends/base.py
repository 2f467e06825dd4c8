"""The mixin that makes a vendor ``DatabaseWrapper`` resilient."""

from __future__ import annotations


class ResilientMixin:
    """Placeholder: reconnect, retry and failover are added over the vendor wrapper."""
