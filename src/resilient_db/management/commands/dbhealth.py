"""``manage.py dbhealth``: probe every alias, peer and replica and say what is usable.

Exit codes, for scripts and container probes: 0 healthy, 1 degraded (something
down or lagging, but every alias can still be served), 2 unavailable (an
alias has no usable target, or no writable primary), 3 misconfigured (the
settings have errors: the system-check messages are printed, nothing is probed).
With ``--wait``, 0 as soon as the awaited status is reached, else the last
round's code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from argparse import SUPPRESS, ArgumentParser, ArgumentTypeError
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from resilient_db.conf import get_settings
from resilient_db.health.render import Palette, render_summary, render_table
from resilient_db.health.report import Report, UnknownAlias, build_report
from resilient_db.ranges import DAY, RANGES
from resilient_db.validation import describe, errors_of, validate_current

#: Exit code for settings the system checks reject: distinct from 1 and 2,
#: which describe the servers, so a probe script never mistakes a typo for an outage.
MISCONFIGURED = 3

CLEAR = "\x1b[H\x1b[2J"  # cursor home + clear screen: redraw in place
# Pause between two probe rounds of --wait: short, so an entrypoint starts soon
# after the database does, yet far from a busy loop (each round is one
# connection per target).
WAIT_INTERVAL = 0.5
# How good a status --wait accepts, by name: a status passes when its rank is at
# most the awaited one's.
RANK = {"healthy": 0, "degraded": 1, "unavailable": 2}


#: The longest --watch interval: past it, sleep() and lock waits raise OverflowError.
MAX_SECONDS = DAY


def _positive(value: str, high: float = MAX_SECONDS) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < number <= high:
        raise ArgumentTypeError(f"{value!r} must be a number of seconds above zero, at most {high:g}")
    return number


def _probe_timeout(value: str) -> float:
    # The same range as HEALTH.PROBE_TIMEOUT: 1e10 overflowed a lock wait.
    return _positive(value, RANGES["HEALTH.PROBE_TIMEOUT"].high)


class _NotFromThisThread(logging.Filter):
    """Drop the records one thread logs: the command's own probe results."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread


@contextlib.contextmanager
def _quiet_own_probes() -> Iterator[None]:
    """Keep the registry from logging what the command's own probes found.

    Its probes report to the registry (so a shared store teaches the workers),
    and the registry logs each target that goes down or up; the table already
    says so, and a project that logs ``resilient_db`` to the console would show
    every failure twice. Only this thread's records are dropped: another
    thread of the process (a monitor, a request) still logs.
    """
    health_logger = logging.getLogger("resilient_db.health")
    own = _NotFromThisThread()
    health_logger.addFilter(own)
    try:
        yield
    finally:
        health_logger.removeFilter(own)


class Command(BaseCommand):
    help = (
        "Probe every database alias, peer and replica in parallel and report role, state, "
        "latency, replication lag and back-off. Exit code: 0 healthy, 1 degraded, 2 unavailable, "
        "3 misconfigured."
    )
    requires_system_checks: list[str] = []  # an operator needs this most when things are broken
    # Set when run as ``manage.py dbhealth``: a status is then an exit code only,
    # see :meth:`_finish`.
    from_command_line = False

    def run_from_argv(self, argv: list[str]) -> None:
        """Run from the command line, where a status is an exit code, not an error."""
        self.from_command_line = True
        super().run_from_argv(argv)

    def add_arguments(self, parser: ArgumentParser) -> None:
        """Declare the options."""
        parser.add_argument(
            "--database",
            action="append",
            dest="databases",
            metavar="ALIAS",
            help="Only this alias (repeatable). Default: every alias in DATABASES.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the report as JSON (schema 1)."
        )
        repeat = parser.add_mutually_exclusive_group()
        repeat.add_argument(
            "--watch",
            type=_positive,
            metavar="SECONDS",
            help="Probe again every SECONDS until interrupted; redraws in place on a terminal.",
        )
        repeat.add_argument(
            "--wait",
            type=_positive,
            metavar="SECONDS",
            help=(
                "Probe again until every alias is healthy (see --wait-for), for at most "
                "SECONDS; exit 0 once it is, else with the last status's code."
            ),
        )
        parser.add_argument(
            "--wait-for",
            choices=["healthy", "degraded"],
            default=None,
            help="With --wait: the status to wait for (default healthy; degraded accepts both).",
        )
        parser.add_argument(
            "--timeout",
            type=_probe_timeout,
            metavar="SECONDS",
            help="Per-probe timeout (default: RESILIENT_DB['HEALTH']['PROBE_TIMEOUT']).",
        )
        # Bounded --watch for tests and scripts.
        parser.add_argument("--count", type=int, default=None, help=SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        """Probe, print, and exit with the status code."""
        with _quiet_own_probes():
            self._handle(options)

    def _finish(self, status: str, code: int) -> None:
        """End with ``code``: a designed outcome, already printed in the summary."""
        if not code:
            return
        if self.from_command_line:
            # Django would print "CommandError: database status: degraded" after
            # the summary that already says it, as if the command had failed.
            raise SystemExit(code)
        # call_command(): callers read the code from CommandError.returncode.
        raise CommandError(f"database status: {status}", returncode=code)

    def _handle(self, options: dict[str, Any]) -> None:
        aliases: list[str] | None = options["databases"]
        self._check_configuration()
        timeout: float = options["timeout"] or get_settings().health.probe_timeout
        watch: float | None = options["watch"]
        count: int | None = options["count"]
        as_json: bool = options["json"]
        wait: float | None = options["wait"]
        wait_for: str | None = options["wait_for"]
        if wait_for is not None and wait is None:
            raise CommandError("--wait-for needs --wait SECONDS", returncode=MISCONFIGURED)
        tty = self.stdout.isatty()
        palette = self._palette(options, tty)

        if wait is not None:
            report = self._wait(aliases, timeout, wait, wait_for or "healthy")
            self._show(report, as_json=as_json, palette=palette, tty=tty, redraw=False)
            if RANK[report.status] <= RANK[wait_for or "healthy"]:
                return
            self._finish(report.status, report.exit_code)
            return

        report = self._probe(aliases, timeout)
        runs = 1
        self._show(report, as_json=as_json, palette=palette, tty=tty, redraw=watch is not None)
        if watch is not None:
            try:
                while count is None or runs < count:
                    # Sleep the rest of the interval, not the whole of it: a slow
                    # probe round must not stretch the period.
                    time.sleep(max(0.0, watch - report.duration))
                    # Later rounds answer from results at most one interval
                    # old, re-probed in the background: a frozen target never
                    # stalls the display, and is probed once per interval.
                    report = self._probe(aliases, timeout, max_age=watch)
                    runs += 1
                    self._show(report, as_json=as_json, palette=palette, tty=tty, redraw=True)
            except KeyboardInterrupt:
                self.stdout.write("")
        self._finish(report.status, report.exit_code)

    def _wait(
        self, aliases: list[str] | None, timeout: float, wait: float, wait_for: str
    ) -> Report:
        """Probe every WAIT_INTERVAL until the status is at least ``wait_for`` or time is up.

        Each round is bounded by the probe timeout and no round starts after the
        deadline, so the command returns within ``wait`` plus one probe timeout.
        """
        deadline = time.monotonic() + wait
        said = ""
        while True:
            report = self._probe(aliases, timeout)
            if RANK[report.status] <= RANK[wait_for]:
                return report
            left = deadline - time.monotonic()
            # One line per change, not per round: an entrypoint's log shows
            # what it is waiting for without a line every half second.
            why = "; ".join(f"{a.alias}: {r}" for a in report.aliases for r in a.reasons)
            # The categories tell "refused" from "starting up" from "no answer".
            seen = sorted({r.probe.category.value for r in report.targets if r.probe.category})
            if seen:
                why += f" [{', '.join(seen)}]"
            line = f"waiting for {wait_for} ({report.status}: {why.strip() or report.status})"
            if line != said:
                said = line
                self.stderr.write(f"{line}, {max(0.0, left):.1f}s left")
                self.stderr.flush()
            if left <= 0:
                return report
            try:
                time.sleep(min(WAIT_INTERVAL, left))
            except KeyboardInterrupt:
                return report

    def _check_configuration(self) -> None:
        # The command skips Django's system checks (it must run when an
        # unrelated setting is broken), so it runs this app's own validation:
        # the same messages `manage.py check` prints, and exit 3.
        _parsed, problems = validate_current()
        errors = errors_of(problems)
        if errors:
            self.stderr.write(describe(errors))
            raise CommandError(
                f"RESILIENT_DB is misconfigured ({len(errors)} "
                f"error{'s' if len(errors) > 1 else ''}); nothing was probed.",
                returncode=MISCONFIGURED,
            )

    def _probe(
        self, aliases: list[str] | None, timeout: float, max_age: float | None = None
    ) -> Report:
        try:
            return build_report(aliases, timeout=timeout, max_age=max_age)
        except UnknownAlias as exc:
            raise CommandError(f"Unknown database alias: {exc}", returncode=2) from None
        except ImproperlyConfigured as exc:
            # Anything else Django or a backend refuses to configure (a
            # missing driver, an unknown ENGINE): a message, not a traceback.
            raise CommandError(str(exc), returncode=MISCONFIGURED) from None

    def _palette(self, options: dict[str, Any], tty: bool) -> Palette:
        # Colour only on a terminal, never with --no-color or NO_COLOR
        # (https://no-color.org); --force-color wins over both.
        wanted = options.get("force_color") or (
            tty and not options.get("no_color") and not os.environ.get("NO_COLOR")
        )
        if not wanted:
            return Palette()
        style = self.style
        return Palette(
            good=style.SUCCESS,
            warn=style.WARNING,
            bad=style.ERROR,
            head=style.MIGRATE_HEADING,
            dim=style.NOTICE,
        )

    def _show(
        self, report: Report, *, as_json: bool, palette: Palette, tty: bool, redraw: bool
    ) -> None:
        if as_json:
            # One JSON document per line, so --watch --json is JSON Lines.
            text = json.dumps(report.as_dict(show_hosts=True), indent=None if redraw else 2)
            self.stdout.write(text)
            self.stdout.flush()
            return
        width = shutil.get_terminal_size().columns if tty or "COLUMNS" in os.environ else None
        lines = render_table(report, width=width, palette=palette)
        lines += render_summary(report, palette=palette)
        if redraw:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report.generated_at))
            lines.insert(0, f"dbhealth at {stamp}")
            if tty:
                self.stdout.write(CLEAR, ending="")
            else:
                lines.append("")  # a blank line between rounds when piped
        self.stdout.write("\n".join(lines))
        self.stdout.flush()
