"""The chaos soak: mixed traffic while real faults come and go, then full write accounting.

Short form (the default, in CI): ``RESILIENT_DB_CHAOS_SECONDS=60``, four threads.
Long form: more seconds, and ``RESILIENT_DB_CHAOS_PROCESSES`` child processes sharing
a Redis-backed registry. See docs/chaos.md.
"""

from __future__ import annotations

import pytest
from django.test import override_settings

from resilient_db_testbed.chaos import Toolbox, choose
from tests.chaos.conftest import REPORTS
from tests.chaos.controller import catalogue
from tests.chaos.soak import ALIASES, Options, chaos_settings, run_soak

pytestmark = [pytest.mark.slow, pytest.mark.bed]


@pytest.mark.timeout(600)
@pytest.mark.django_db(transaction=True, databases=list(ALIASES))
def test_soak(chaos_tools: Toolbox, tmp_path, request, record_property) -> None:  # type: ignore[no-untyped-def]
    opts = Options.from_env()
    raw = chaos_settings(shared_registry=opts.processes > 0)
    # "none" runs the same traffic without faults: the baseline the harness must pass.
    baseline = opts.faults.strip() == "none"
    faults = [] if baseline else choose(catalogue(chaos_tools, user="rdb"), opts.faults)
    assert faults or baseline, f"no fault matches RESILIENT_DB_CHAOS_FAULTS={opts.faults!r}"
    with override_settings(
        RESILIENT_DB=raw, DATABASE_ROUTERS=["resilient_db.routers.PinningReplicaRouter"]
    ):
        report = run_soak(faults, opts, tmp_path, raw)
    text = report.text() + f"\nartifacts: {tmp_path}\n"
    REPORTS.append((request.node.nodeid, text))
    for key, value in sorted(report.counts.items()):
        record_property(key, value)
    assert report.counts.get("writes.total", 0) > 0, text
    assert baseline or report.counts.get("faults.injected", 0) > 0, text
    assert not report.violations, text
