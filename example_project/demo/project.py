"""Run the example project's management commands in child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
MANAGE = PROJECT_DIR / "manage.py"
# The repository's test bed package (development only): the children's settings ask it
# for the bed's ports, so they import it from the checkout as run.py does.
TESTBED_DIR = PROJECT_DIR.parent / "testbed"


def child_env(**extra: str) -> dict[str, str]:
    """Return the environment for a child running the project (settings, import path)."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "shop.settings"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_DIR), str(TESTBED_DIR), env.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


def manage(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py args`` and return the finished process (never raises on exit code)."""
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        cwd=PROJECT_DIR,
        env=dict(env) if env is not None else child_env(),
        text=True,
        capture_output=capture,
        timeout=timeout,
        check=False,
    )
