#!/usr/bin/env python3
"""The example project's main job and live failure demo.

    python example_project/run.py check            # migrate, then manage.py dbhealth
    python example_project/run.py demo             # check, then about two minutes of faults
    python example_project/run.py demo --compare   # the same faults on Django's stock backend too

Needs django-resilient-db and Django importable (``bootstrap.sh`` sets up a venv).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The repository's test bed (development only, not in the wheel) starts the demo's servers.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "testbed"))

from demo.cli import main  # noqa: E402  (the path above makes the project importable)

if __name__ == "__main__":
    sys.exit(main())
