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
        candidates = [PKG / rel, *PKG.glob(f"*/{rel}")]
        if not any(p.exists() for p in candidates):
            missing.append(rel)
    assert not missing, missing
