"""``manage.py dbhealth``: probe every alias, peer and replica and say what is usable.

Exit codes, for scripts and container probes: 0 healthy, 1 degraded (something
down or lagging, but every alias can still be served), 2 unavailable (an
alias has no usable target, or no writable primary), 3 misconfigured (the
settings have errors: the system-check messages are printed, nothing is probed).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from argparse import SUPPRESS, ArgumentParser, ArgumentTypeError
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


class Command(BaseCommand):
    help = (
        "Probe every database alias, peer and replica in parallel and report role, state, "
        "latency, replication lag and back-off. Exit code: 0 healthy, 1 degraded, 2 unavailable, "
        "3 misconfigured."
    )
    requires_system_checks: list[str] = []  # an operator needs this most when things are broken

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
        parser.add_argument(
            "--watch",
            type=_positive,
            metavar="SECONDS",
            help="Probe again every SECONDS until interrupted; redraws in place on a terminal.",
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
        aliases: list[str] | None = options["databases"]
        self._check_configuration()
        timeout: float = options["timeout"] or get_settings().health.probe_timeout
        watch: float | None = options["watch"]
        count: int | None = options["count"]
        as_json: bool = options["json"]
        tty = self.stdout.isatty()
        palette = self._palette(options, tty)

        report = self._probe(aliases, timeout)
        runs = 1
        self._show(report, as_json=as_json, palette=palette, tty=tty, redraw=watch is not None)
        if watch is not None:
            try:
                while count is None or runs < count:
                    # Sleep the rest of the interval, not the whole of it: a slow
                    # probe round must not stretch the period.
                    time.sleep(max(0.0, watch - report.duration))
                    report = self._probe(aliases, timeout)
                    runs += 1
                    self._show(report, as_json=as_json, palette=palette, tty=tty, redraw=True)
            except KeyboardInterrupt:
                self.stdout.write("")
        if report.exit_code:
            raise CommandError(f"database status: {report.status}", returncode=report.exit_code)

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

    def _probe(self, aliases: list[str] | None, timeout: float) -> Report:
        try:
            return build_report(aliases, timeout=timeout)
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
