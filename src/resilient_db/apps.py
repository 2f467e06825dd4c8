from __future__ import annotations

from django.apps import AppConfig


class ResilientDBConfig(AppConfig):
    name = "resilient_db"
    verbose_name = "Resilient DB"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at module level: registering checks and signal
        # receivers must not read settings while Django is still loading.
        # Everything below is idempotent (ready() may run more than once).
        from resilient_db import caches, checks, conf

        checks.register()
        # Every module-level cache empties through one hook: on a change of
        # the settings the app reads, and in a forked child.
        caches.register(conf.clear_cache)
        caches.install()

        from resilient_db.routers import wiring as routing_wiring

        routing_wiring.install()

        # Routers only read the registry; the health side starts the monitor
        # when they skip a replica (health/monitor_start.py says why).
        from resilient_db.health import monitor_start

        monitor_start.connect()
