"""A soak worker process (the long form): ``python -m tests.chaos.child SPEC.json``.

It runs the same workers as the threads of the main process, against the same test
databases, with the same ``RESILIENT_DB`` (a Redis-backed registry shared by every
process), and writes its logs as JSON for the main process to judge.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(spec_path: str) -> int:
    """Run the workers described in ``spec_path``; write their logs; return 0."""
    spec = json.loads(Path(spec_path).read_text())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    from django.conf import settings

    # The main process runs under pytest-django: point every alias at its test database.
    for alias, name in spec["names"].items():
        settings.DATABASES[alias]["NAME"] = name
    settings.RESILIENT_DB = spec["resilient_db"]
    settings.DATABASE_ROUTERS = spec["routers"]

    import django

    django.setup()

    from resilient_db_testbed import bed
    from tests.chaos import sockets
    from tests.chaos.workload import ThreadPool, WorkerSpec

    names = {bed.config().port(n): n for n in bed.SERVER_NAMES}
    ports = set(names)
    before = sockets.held(ports)
    pool = ThreadPool([
        WorkerSpec(name=w["name"], run_id=spec["run_id"], stop_at=spec["stop_at"], seed=w["seed"])
        for w in spec["workers"]
    ])
    pool.setup()
    Path(spec["ready"]).write_text("ready")
    pool.start()
    stuck = pool.join(time.monotonic() + max(0.0, spec["stop_at"] - time.time()) + 25.0)
    new = sockets.leaked(before, ports, cache_ports={bed.config().port("redis")})
    Path(spec["out"]).write_text(json.dumps({
        "logs": [log.to_json() for log in pool.logs()],
        "stuck": [f"{spec['workers'][0]['name'][:2]}:{name}" for name in stuck],
        "leaked_sockets": len(new),
        "leaked": [h.describe(names) for h in new],
    }))
    # Stuck daemon threads must not keep the process alive.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
