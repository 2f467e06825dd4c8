"""The reference pages stay true to the code: every setting, every module named."""

from __future__ import annotations

import re
from pathlib import Path

from resilient_db import settings_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PKG = ROOT / "src" / "resilient_db"


def test_every_setting_has_a_heading() -> None:
    text = (DOCS / "settings.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,3} (\w+)$", text, re.M))
    keys = set()
    for name in ("TOP_KEYS", "ALIAS_KEYS", "RETRY_KEYS", "PINNING_KEYS", "REGISTRY_KEYS",
                 "HEALTH_KEYS"):
        keys |= set(getattr(settings_parser, name))
    assert keys <= headings, sorted(keys - headings)


def test_architecture_names_existing_modules() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    named = re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)`", text)
    assert len(named) > 10
    missing = []
    for rel in named:
        # A module of the package or of the test bed, or a file of the repository.
        candidates = [PKG / rel, *PKG.glob(f"*/{rel}"), ROOT / rel,
                      ROOT / "testbed" / "resilient_db_testbed" / rel]
        if not any(p.exists() for p in candidates):
            missing.append(rel)
    assert not missing, missing


def test_home_page_names_tests_and_benchmarks_that_exist() -> None:
    # The comparison table on the home page is only as good as what backs each row.
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    table = [row for row in rows[1:] if row.count("|") >= 8]
    assert len(table) >= 10
    missing = []
    for row in table:
        backed_by = row.rstrip(" |").rsplit("|", 1)[1]
        tests = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", backed_by)
        benches = re.findall(r"benchmark `(bench_\w+)`", backed_by)
        assert tests or benches, row
        for path, name in tests:
            source = ROOT / path
            if not source.exists() or not re.search(
                rf"^(?:async )?def {name}\(", source.read_text(encoding="utf-8"), re.M
            ):
                missing.append(f"{path}::{name}")
        missing += [b for b in benches if not (ROOT / "benchmarks" / f"{b}.py").exists()]
    assert missing == []
