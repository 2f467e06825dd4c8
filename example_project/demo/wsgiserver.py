"""A threaded stdlib WSGI server: the fallback when neither gunicorn nor uvicorn is installed.

Usage: ``python -m demo.wsgiserver HOST PORT`` (from the project directory).
"""

from __future__ import annotations

import os
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per connection, so one stuck request does not stop the others."""

    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """No access log: the demo measures its own traffic."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (stdlib name)
        """Drop the access log line."""


def main(argv: list[str]) -> None:
    """Serve ``shop.wsgi`` on ``argv[0]:argv[1]`` until terminated."""
    host, port = argv[0], int(argv[1])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from shop.wsgi import application

    with make_server(host, port, application, ThreadingWSGIServer, QuietHandler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
