"""The test settings with a RESILIENT_DB the checks reject (a typo in REPLICAS)."""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import RESILIENT_DB

RESILIENT_DB = {
    **RESILIENT_DB,
    "DATABASES": {"default": {"REPLICAS": ["replcia"]}},
}
