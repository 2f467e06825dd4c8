"""The package metadata says what CI tests, and CI builds and installs what users install."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, when installed
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _noxfile_constant(name: str) -> Any:
    """Return a literal assigned at the top of noxfile.py (nox itself need not be installed)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    for node in tree.body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:  # type: ignore[attr-defined]
            return ast.literal_eval(node.value)  # type: ignore[attr-defined]
    raise LookupError(name)


def test_classifiers_list_every_django_and_python_ci_tests() -> None:
    classifiers = set(_pyproject()["project"]["classifiers"])
    djangos = _noxfile_constant("DJANGO_PYTHONS")
    pythons = _noxfile_constant("PYTHONS")
    missing = [f"Framework :: Django :: {v}" for v in djangos] + [
        f"Programming Language :: Python :: {v}" for v in pythons
    ]
    assert [c for c in missing if c not in classifiers] == []
    # And nothing CI does not test.
    listed = {c.rsplit(" :: ", 1)[1] for c in classifiers if c.startswith("Framework :: Django :: ")}
    assert listed == set(djangos)


def test_ci_builds_and_installs_the_package() -> None:
    text = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    tree = ast.parse(text)
    sessions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "package" in sessions
    ci = ast.get_source_segment(text, sessions["ci"])
    assert ci is not None and 'session.notify("package")' in ci
    package = ast.get_source_segment(text, sessions["package"])
    assert package is not None
    for step in ("twine", "check", "manage.py", ".whl"):
        assert step in package, step

