"""Resilient database backends: use ``resilient_db.backends.<vendor>`` as ENGINE.

:func:`make_resilient` wraps any other backend's ``DatabaseWrapper`` (a
third-party one included); see docs/backends.md, "Any other backend".
"""

from __future__ import annotations

from typing import TypeVar

from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["make_resilient"]

W = TypeVar("W", bound=type[BaseDatabaseWrapper])


def make_resilient(wrapper_class: W) -> W:
    """Return a subclass of ``wrapper_class`` with the resilient mixin in front."""
    from resilient_db.backends.base import ResilientMixin

    if issubclass(wrapper_class, ResilientMixin):
        return wrapper_class
    cls = type(
        wrapper_class.__name__,
        (ResilientMixin, wrapper_class),
        {"__module__": wrapper_class.__module__, "__doc__": wrapper_class.__doc__},
    )
    return cls  # type: ignore[return-value]
