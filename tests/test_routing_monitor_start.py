"""The router only reads the registry; a replica it skips still gets the monitor going."""

from __future__ import annotations

import ast
from pathlib import Path

from resilient_db.health.monitor import running_monitor, stop_monitor
from resilient_db.health.registry import get_registry
from resilient_db.routers import context, get_replica

ROUTERS = Path(__file__).resolve().parent.parent / "src" / "resilient_db" / "routers"


def test_a_skipped_replica_starts_the_monitor_without_any_connection() -> None:
    # A site on Django's own engines: no connection ever starts the monitor
    # (only the resilient engines' failover does), and the router connects to
    # nothing. Its first read skips the replica, whose lag nobody measured yet.
    stop_monitor()
    get_registry().reset()
    assert running_monitor() is None
    with context.isolated():
        assert get_replica("default") == "default"  # cold start: lag unmeasured
    assert running_monitor() is not None


def test_no_router_module_imports_the_monitor() -> None:
    for path in ROUTERS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.startswith("resilient_db.health.monitor") for n in names), path

