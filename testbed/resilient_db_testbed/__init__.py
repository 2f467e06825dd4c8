"""Real-server test bed, fault injection and a chaos TCP proxy for the project's own tests.

Development only: it lives in the repository (``testbed/``), outside ``src/``, so the
django-resilient-db wheel never ships it. It does not import ``resilient_db``.
"""

from __future__ import annotations
