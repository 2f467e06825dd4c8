"""Command line of ``run.py``: ``check`` (the main job) and ``demo`` (the live failure demo)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence

from demo import bedctl
from demo.project import child_env, manage


def say(message: str) -> None:
    """Print a progress line at once."""
    print(message, flush=True)


def choose_databases() -> tuple[str, dict[str, str]]:
    """Return where the project's data lives ("env", "bed", "sqlite") and the child env."""
    if os.environ.get("DATABASE_URL"):
        return "env", child_env()
    forced = os.environ.get("SHOP_DB", "auto")
    if forced == "sqlite" or (forced == "auto" and not bedctl.available()):
        if forced == "auto":
            say("PostgreSQL or PgBouncer binaries not found: using the embedded SQLite database.")
            say("  (python -m resilient_db_testbed.bed install  installs them on Debian/Ubuntu)")
        return "sqlite", child_env(SHOP_DB="sqlite")
    return "bed", child_env(SHOP_DB="bed")


def bring_up_bed() -> tuple[list[str], bool]:
    """Start the bed's PostgreSQL servers; return the names started and whether it is new."""
    from resilient_db_testbed import bed

    created = not bed.config().root.exists()
    started_at = time.monotonic()
    say(f"Starting the PostgreSQL test bed in {bed.config().root} ...")
    started = bedctl.ensure_up()
    cfg = bed.config()
    say(
        f"  bed up in {time.monotonic() - started_at:.1f} s: primary {cfg.host}:{cfg.pg_primary_port}, "
        f"replica :{cfg.pg_replica_port}, PgBouncer A :{cfg.pgbouncer_a_port}, "
        f"PgBouncer B :{cfg.pgbouncer_b_port}"
    )
    if bedctl.maria_available():
        say(f"  MariaDB primary :{cfg.maria_primary_port}, MariaDB peers (TCP proxies) "
            f":{cfg.maria_peer_a_port} and :{cfg.maria_peer_b_port}")
    return started, created


def put_bed_back(started: list[str], created: bool) -> None:
    """Stop the servers this run started; remove the bed's data if this run created it."""
    from resilient_db_testbed import bed

    if not started:
        return
    say("Stopping the servers this run started.")
    bedctl.stop_all(started)
    if created:
        shutil.rmtree(bed.config().root, ignore_errors=True)


def migrate_and_check(env: dict[str, str]) -> int:
    """Run ``migrate`` then ``dbhealth``; return dbhealth's exit status (or migrate's)."""
    say("$ manage.py migrate")
    done = manage(["migrate", "--noinput"], env=env)
    if done.returncode != 0:
        say(f"migrate failed (exit {done.returncode})")
        return done.returncode or 1
    if env.get("SHOP_DB") == "bed" and bedctl.maria_available():
        say("$ manage.py migrate --database maria")
        done = manage(["migrate", "--noinput", "--database", "maria"], env=env)
        if done.returncode != 0:
            say(f"migrate failed (exit {done.returncode})")
            return done.returncode or 1
    say("$ manage.py dbhealth")
    health = manage(["dbhealth"], env=env)
    say(f"dbhealth exit status: {health.returncode}")
    return health.returncode


def cmd_check(args: argparse.Namespace) -> int:
    """The main job: migrate, then dbhealth, on the bed or the SQLite default."""
    source, env = choose_databases()
    started: list[str] = []
    created = False
    try:
        if source == "bed":
            started, created = bring_up_bed()
        return migrate_and_check(env)
    finally:
        if not args.keep_bed:
            put_bed_back(started, created)


def cmd_demo(args: argparse.Namespace) -> int:
    """Check, then run the live failure demo on the bed."""
    from demo import runner

    source, env = choose_databases()
    if source != "bed":
        # The main job still runs; only the fault injection needs servers this run owns.
        status = migrate_and_check(env)
        say("\nThe live demo injects real faults into real servers, so it needs the PostgreSQL")
        if source == "sqlite":
            say("test bed: install PostgreSQL and PgBouncer (as root on Debian/Ubuntu:")
            say("python -m resilient_db_testbed.bed install), then run this again.")
        else:
            say("test bed, and never touches a database it did not start: unset DATABASE_URL.")
        return status
    started: list[str] = []
    created = False
    try:
        started, created = bring_up_bed()
        status = migrate_and_check(env)
        if status != 0:
            return status
        return runner.run(args, env)
    finally:
        if not args.keep_bed:
            put_bed_back(started, created)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run it."""
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="migrate, then manage.py dbhealth (the main job)")
    check.add_argument("--keep-bed", action="store_true", help="leave the bed running")
    demo = sub.add_parser("demo", help="check, then the live failure demo (about two minutes)")
    demo.add_argument("--duration", type=float, default=None,
                      help="seconds of traffic per run (default 135, 75 each with --compare)")
    mode = demo.add_mutually_exclusive_group()
    mode.add_argument("--stock", action="store_true",
                      help="run the faults against Django's stock backend instead")
    mode.add_argument("--compare", action="store_true",
                      help="run stock Django first, then django-resilient-db, side by side")
    demo.add_argument("--server", choices=["gunicorn", "uvicorn", "wsgiref"], default=None,
                      help="the app server (default: gunicorn when installed)")
    demo.add_argument("--plain", action="store_true", help="plain lines even on a terminal")
    demo.add_argument("--keep-bed", action="store_true", help="leave the bed running")
    demo.add_argument("--keep-logs", action="store_true", help="keep the app server's log")
    demo.add_argument("--no-web", dest="web", action="store_false",
                      help="no web dashboard (by default the demo serves one at /demo/)")
    demo.add_argument("--web-port", type=int, default=0,
                      help="port of the web dashboard (default: a free one)")
    demo.add_argument("--web-linger", type=float, default=0.0,
                      help="keep the web dashboard up this many seconds after the end")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return cmd_check(args)
        return cmd_demo(args)
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
