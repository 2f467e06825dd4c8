"""The vendor modules: every statement the app sends of its own, depending on nothing else."""

from __future__ import annotations

import subprocess
import sys

from resilient_db import vendors


def test_the_vendor_modules_import_nothing_else_of_the_app() -> None:
    code = (
        "import sys, resilient_db.vendors; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('resilient_db'))))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert found == [
        "resilient_db",
        "resilient_db.vendors",
        "resilient_db.vendors.mysql",
        "resilient_db.vendors.postgresql",
    ]


def test_a_vendor_without_rules_is_unknown() -> None:
    # sqlite3 and third-party backends: no read-only rule, no Galera, no read-only BEGIN.
    assert vendors.server_is_read_only("sqlite", object()) is None
    assert vendors.node_not_ready("postgresql", object()) is None
    assert vendors.read_only_begin("sqlite") is None
    assert vendors.read_only_begin("postgresql") == "BEGIN READ ONLY"
    assert vendors.read_only_begin("mysql") == "START TRANSACTION READ ONLY"
