from __future__ import annotations

from django.apps import AppConfig


class ResilientDBConfig(AppConfig):
    name = "resilient_db"
    verbose_name = "Resilient DB"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at module level: registering checks and signal
        # receivers must not read settings while Django is still loading.
        from django.core.signals import setting_changed

        from resilient_db import checks, conf

        checks.register()
        setting_changed.connect(conf.clear_cache, dispatch_uid="resilient_db.conf")

        from resilient_db.routers import wiring as routing_wiring

        routing_wiring.install()

        # Routers only read the registry; the health side starts the monitor
        # when they skip a replica (health/monitor_start.py says why).
        from resilient_db.health import monitor_start

        monitor_start.connect()
