"""Settings of the shop example project, read from the environment with django-environ.

See ``shop.databases`` for where the databases come from. Every other knob has a safe
default for a local run; a deployment sets ``SECRET_KEY``, ``DEBUG=0`` and
``ALLOWED_HOSTS``.
"""

from __future__ import annotations

from typing import Any

import environ

from shop import databases as dbplan

env = environ.Env()
environ.Env.read_env(dbplan.PROJECT_DIR / ".env")  # optional; silently absent

BASE_DIR = dbplan.PROJECT_DIR
SECRET_KEY = env.str("SECRET_KEY", default="example-project-only-not-secret")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# SHOP_STOCK=1: the same site on Django's stock backends with the router from Django's
# documentation, so the demo can show what the site does without django-resilient-db.
STOCK = env.bool("SHOP_STOCK", default=False)

PLAN = dbplan.plan(env)
DATABASES: dict[str, dict[str, Any]] = PLAN.databases
dbplan.finish(
    DATABASES,
    stock=STOCK,
    conn_max_age=env.int("CONN_MAX_AGE", default=60),
    connect_timeout=env.int("DB_CONNECT_TIMEOUT", default=1),
)

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "orders",
    "livedemo",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

if STOCK:
    DATABASE_ROUTERS = ["shop.routers.PrimaryReplicaRouter"]
else:
    INSTALLED_APPS.append("resilient_db")
    # DATABASE_PEERS may be URLs with passwords: keep them out of the DEBUG
    # page and the admin error e-mail (Django masks only secret-looking names).
    DEFAULT_EXCEPTION_REPORTER_FILTER = "resilient_db.debug.SafeExceptionReporterFilter"
    DATABASE_ROUTERS = []
    if PLAN.replicas:  # without replicas there is nothing to route or pin
        DATABASE_ROUTERS = ["resilient_db.routers.PinningReplicaRouter"]
        # First, so the whole request (every later middleware and the view) runs inside one
        # unit of work whose writes pin this user's reads to the primary.
        MIDDLEWARE.insert(0, "resilient_db.middleware.PinningMiddleware")

_default: dict[str, Any] = {}
if PLAN.peers:
    _default["PEERS"] = PLAN.peers
if PLAN.replicas:
    _default["REPLICAS"] = PLAN.replicas
    _default["MAX_REPLICA_LAG"] = env.float("MAX_REPLICA_LAG", default=5.0)

_resilient_aliases: dict[str, Any] = {"default": _default} if _default else {}
if PLAN.maria_peers:
    _resilient_aliases["maria"] = {"PEERS": PLAN.maria_peers}

RESILIENT_DB: dict[str, Any] = {
    "DATABASES": _resilient_aliases,
    "CHECK_INTERVAL": env.float("RESILIENT_CHECK_INTERVAL", default=1.0),
    "MAX_CHECK_INTERVAL": 8.0,
    "CONNECT_TIMEOUT": env.float("DB_CONNECT_TIMEOUT", default=1.0),
    "RETRY": {"READS": 2, "DEADLINE": 5.0},
    # Loopback HTTP in development; set PIN_COOKIE_SECURE=1 behind HTTPS.
    "PINNING": {"SECONDS": 5, "SECURE": env.bool("PIN_COOKIE_SECURE", default=False)},
    # SHOW_HOSTS: the health endpoint names hosts and ports; the demo turns it
    # on for its loopback-only server so its dashboard can name the servers.
    "HEALTH": {"PROBE_TIMEOUT": 1.0, "SHOW_HOSTS": env.bool("HEALTH_SHOW_HOSTS", default=False)},
    # A frozen peer (SIGSTOP, a black hole) never answers a statement already
    # sent on an open connection; cut it off after this long so reads fail
    # over. Above the slowest legitimate query of this app by a wide margin.
    "STALL_TIMEOUT": env.float("DB_STALL_TIMEOUT", default=2.0),
}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    },
]
STATIC_URL = "static/"

# The live demo's dashboard (/demo/) reads the JSON document run.py demo writes.
DEMO_STATE_FILE = env.str("SHOP_DEMO_STATE", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "resilient_db": {"handlers": ["console"], "level": env.str("RESILIENT_DB_LOG", default="WARNING")},
    },
}
