"""Real-server test bed, fault injection and a chaos TCP proxy for the test suite."""

from __future__ import annotations
