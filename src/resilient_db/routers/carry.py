"""The earlier name of :mod:`resilient_db.routers.pin_handoff`, kept for code that imports it."""

from __future__ import annotations

from resilient_db.routers.pin_handoff import (
    ENVIRON,
    HEADER,
    celery_before_task_publish,
    celery_task_postrun,
    celery_task_prerun,
    command_unit,
    environ_for_subprocess,
    export_pin,
    import_pin,
    pin_set,
    pinned_unit,
)

__all__ = [
    "ENVIRON",
    "HEADER",
    "celery_before_task_publish",
    "celery_task_postrun",
    "celery_task_prerun",
    "command_unit",
    "environ_for_subprocess",
    "export_pin",
    "import_pin",
    "pin_set",
    "pinned_unit",
]
