"""Shared helpers of the benchmarks: settings for the test bed, timing, summaries, output.

Every benchmark runs against the project's test bed (``PYTHONPATH=testbed python -m
resilient_db_testbed.bed up``) and honours the same ``RESILIENT_DB_BED_*`` variables as the test suite. Timings
alternate blocks of each case in one process, so drift (CPU frequency, other load)
hits every case alike; results are medians with min/max over the blocks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# testbed/: the repository's development-only test bed package (not in the wheel).
for _path in (ROOT / "src", ROOT / "testbed", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

PG = "postgresql"
MARIA = "mysql"


def quick() -> bool:
    """Tell whether a short run was asked for (``RESILIENT_DB_BENCH_QUICK=1``)."""
    return os.environ.get("RESILIENT_DB_BENCH_QUICK", "") not in ("", "0")


def bed_alias(vendor: str, port_name: str, *, stock: bool, **extra: Any) -> dict[str, Any]:
    """Return a DATABASES entry for a bed server, resilient or stock Django."""
    from resilient_db_testbed.bed import config

    cfg = config()
    package = "django.db.backends" if stock else "resilient_db.backends"
    if vendor == PG:
        entry: dict[str, Any] = {
            "ENGINE": f"{package}.postgresql",
            "NAME": cfg.pg_db,
            "USER": cfg.pg_user,
            "PASSWORD": cfg.pg_password,
            "OPTIONS": {"connect_timeout": 2},
        }
    else:
        entry = {
            "ENGINE": f"{package}.mysql",
            "NAME": cfg.maria_db,
            "USER": cfg.maria_user,
            "PASSWORD": cfg.maria_password,
            "OPTIONS": {"connect_timeout": 2, "charset": "utf8mb4"},
        }
    entry.update(HOST=cfg.host, PORT=str(cfg.port(port_name)))
    # Persistent connections with health checks: the fair stock baseline.
    entry.update(CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True)
    entry.update(extra)
    return entry


def configure(
    databases: Mapping[str, dict[str, Any]],
    resilient: Mapping[str, Any] | None = None,
    **extra: Any,
) -> None:
    """Configure and set up Django for a benchmark (once per process)."""
    import django
    from django.conf import settings

    options: dict[str, Any] = {
        "DEBUG": False,
        "SECRET_KEY": "benchmarks-only-not-secret",
        "USE_TZ": True,
        "ALLOWED_HOSTS": ["*"],
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "INSTALLED_APPS": [
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "resilient_db",
            "tests.testapp",
        ],
        "DATABASES": dict(databases),
        "RESILIENT_DB": dict(resilient or {"CONNECT_TIMEOUT": 1.0, "CHECK_INTERVAL": 1.0}),
        "LOGGING_CONFIG": None,
    }
    options.update(extra)
    settings.configure(**options)
    django.setup()


_CREATED: list[tuple[str, type[Any]]] = []


def ensure_tables(alias: str, *models: type[Any]) -> None:
    """Create the tables of ``models`` on ``alias`` if missing; :func:`cleanup` drops them."""
    from django.db import connections

    conn = connections[alias]
    existing = set(conn.introspection.table_names())
    with conn.schema_editor() as editor:
        for model in models:
            if model._meta.db_table not in existing:
                editor.create_model(model)
                _CREATED.append((alias, model))


def cleanup() -> None:
    """Drop the tables this process created and close every connection."""
    from django.db import connections

    for alias, model in reversed(_CREATED):
        try:
            with connections[alias].schema_editor() as editor:
                editor.delete_model(model)
        except Exception as exc:  # report, keep cleaning the others
            print(f"could not drop {model._meta.db_table} on {alias}: {exc}", file=sys.stderr)
    _CREATED.clear()
    for conn in connections.all():
        conn.close()


@dataclasses.dataclass(frozen=True)
class Stats:
    """Median, min and max of per-operation times (seconds) over blocks."""

    median: float
    low: float
    high: float
    blocks: int

    def us(self) -> str:
        """Return ``median (min-max)`` in microseconds."""
        return f"{self.median * 1e6:.1f} µs ({self.low * 1e6:.1f}–{self.high * 1e6:.1f})"


def stats(samples: list[float]) -> Stats:
    """Summarise block samples."""
    return Stats(statistics.median(samples), min(samples), max(samples), len(samples))


def alternate(
    cases: Mapping[str, Callable[[], object]],
    *,
    blocks: int = 20,
    ops: int = 200,
    warmup: int = 50,
) -> dict[str, list[float]]:
    """Time ``cases`` in alternating blocks; return seconds per operation for each block."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for block in range(blocks):
        # Rotate the order too, so no case always runs right after another.
        order = names[block % len(names):] + names[: block % len(names)]
        for name in order:
            fn = cases[name]
            t0 = time.perf_counter()
            for _ in range(ops):
                fn()
            out[name].append((time.perf_counter() - t0) / ops)
    return out


def ratio(a: list[float], b: list[float]) -> Stats:
    """Return the per-block ratios a/b summarised (blocks ran side by side)."""
    return stats([x / y for x, y in zip(a, b, strict=True)])


def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine() -> dict[str, str]:
    """Describe the machine the numbers come from."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    import django

    versions = {"python": platform.python_version(), "django": django.get_version()}
    for mod in ("psycopg", "psycopg2", "MySQLdb"):
        try:
            m = __import__(mod)
            versions[mod] = str(getattr(m, "__version__", getattr(m, "version_info", "?")))
        except ImportError:
            versions[mod] = "not installed"
    pg = _cmd(["sh", "-c", "ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1"])
    maria = _cmd(["sh", "-c", "(mariadbd --version || mysqld --version) 2>/dev/null | head -1"])
    return {
        "cpu": f"{cpu} × {os.cpu_count()}",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()} ({_os_name()})",
        "servers": f"PostgreSQL {pg or '?'}, {maria.split(' for ')[0] or 'MariaDB ?'}, PgBouncer (session mode)",
        **versions,
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "?"


def write_result(name: str, title: str, markdown: str, data: Mapping[str, Any]) -> Path:
    """Save one benchmark's section (Markdown) and raw numbers (JSON) under results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    run = run_kind()
    (RESULTS / f"{name}.json").write_text(
        json.dumps({**data, "run": run}, indent=2, default=str)
    )
    path = RESULTS / f"{name}.md"
    path.write_text(f"## {title}\n\n{markdown.strip()}\n\n_{run}._\n")
    print(path.read_text())
    return path


def revision() -> str:
    """Return the code revision measured (``RESILIENT_DB_BENCH_REVISION`` or git), or ``"?"``."""
    given = os.environ.get("RESILIENT_DB_BENCH_REVISION", "").strip()
    if given:
        return given
    found = _cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return found if found and found != "?" and " " not in found else "?"


def run_kind() -> str:
    """Say whether this is a full or a quick run, with the date and the code revision."""
    kind = "Quick run (`RESILIENT_DB_BENCH_QUICK=1`): indicative only" if quick() else "Full run"
    return f"{kind}, {time.strftime('%Y-%m-%d')}, revision {revision()}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """Return a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
