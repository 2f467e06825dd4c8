"""Validate what a peer's connection options can be checked for before any connect."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from resilient_db.conf import Problem, ResilientSettings


def peer_problems(
    parsed: ResilientSettings, databases: Mapping[str, Mapping[str, Any]]
) -> list[Problem]:
    """Return the peers of ``parsed`` whose options no driver would accept."""
    return []
