"""A small TCP proxy that can cut, black-hole or slow down the traffic it forwards.

In-process::

    with ChaosProxy("127.0.0.1", 25432) as proxy:
        connect(port=proxy.port)
        proxy.cut()        # reset every connection, reset new ones until heal()
        proxy.blackhole()  # accept but forward nothing, in both directions
        proxy.delay(0.2)   # add latency to each forwarded chunk
        proxy.heal()

Standalone: ``python -m resilient_db_testbed.proxy --listen 127.0.0.1:23316
--target 127.0.0.1:23306 [--pidfile FILE]`` (SIGTERM or SIGINT stops it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType

__all__ = ["ChaosProxy", "main"]

_TICK = 0.02  # how often idle loops look at the mode; bounds the reaction time of faults
_CHUNK = 65536
_PASS, _CUT, _BLACKHOLE = "pass", "cut", "blackhole"


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST instead of a FIN (linger on, timeout zero)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Link:
    """One proxied connection: the client socket, the upstream socket and its thread."""

    def __init__(self, proxy: ChaosProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(
            target=self._run, name=f"chaos-proxy-{proxy.port}-link", daemon=True
        )

    def shutdown(self) -> None:
        """Wake the link's thread out of any blocking call (used by ``stop``)."""
        with self.lock:
            if self.closed:
                return
            for sock in (self.client, self.upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def _close(self, *, reset: bool) -> None:
        with self.lock:
            self.closed = True
            for sock in (self.client, self.upstream):
                if sock is None:
                    continue
                if reset:
                    _reset(sock)
                else:
                    sock.close()

    def _interrupted(self, generation: int) -> str | None:
        """Return why the link must end now ("stop", "cut"), or ``None``."""
        if self.proxy._stopping.is_set():
            return "stop"
        if self.proxy._generation != generation or self.proxy._mode == _CUT:
            return "cut"
        return None

    def _run(self) -> None:
        generation = self.proxy._generation
        why: str | None = None
        try:
            why = self._serve(generation)
        except OSError:
            why = "error"
        finally:
            self._close(reset=why in {"cut", "error"})
            self.proxy._forget(self)

    def _serve(self, generation: int) -> str | None:
        # A black hole swallows the handshake too: do not even reach the server until healed.
        while self.proxy._mode == _BLACKHOLE:
            if why := self._interrupted(generation):
                return why
            time.sleep(_TICK)
        if why := self._interrupted(generation):
            return why
        upstream = socket.create_connection(
            (self.proxy.target_host, self.proxy.target_port),
            timeout=self.proxy.connect_timeout,
        )
        with self.lock:
            self.upstream = upstream
        if self.closed:
            return "stop"
        for sock in (self.client, upstream):
            sock.settimeout(self.proxy.send_timeout)
        peers = {self.client: upstream, upstream: self.client}
        with selectors.DefaultSelector() as selector:
            selector.register(self.client, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            while True:
                if why := self._interrupted(generation):
                    return why
                if self.proxy._mode == _BLACKHOLE:
                    time.sleep(_TICK)
                    continue
                for key, _ in selector.select(_TICK):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(_CHUNK)
                    if not data:
                        return "eof"
                    if not self._hold(generation):
                        return self._interrupted(generation) or "stop"
                    peers[source].sendall(data)

    def _hold(self, generation: int) -> bool:
        """Sleep the configured delay (and through a black hole); False if interrupted."""
        deadline = time.monotonic() + self.proxy._delay
        while time.monotonic() < deadline or self.proxy._mode == _BLACKHOLE:
            if self._interrupted(generation):
                return False
            time.sleep(min(_TICK, max(0.0, deadline - time.monotonic())) or _TICK)
        return self._interrupted(generation) is None


class ChaosProxy:
    """Forward TCP from a loopback port to a target, with switchable faults."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_port: int = 0,
        *,
        listen_host: str = "127.0.0.1",
        connect_timeout: float = 5.0,
        send_timeout: float = 30.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self._listen_port = listen_port
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._mode = _PASS
        self._delay = 0.0
        self._generation = 0  # bumped by cut(): links of an older generation reset themselves

    # -- life cycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """Return the port the proxy listens on (known once started)."""
        if self._listener is None:
            return self._listen_port
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def address(self) -> tuple[str, int]:
        """Return ``(host, port)`` clients should connect to."""
        return self.listen_host, self.port

    @property
    def connections(self) -> int:
        """Return how many proxied connections are open."""
        with self._lock:
            return len(self._links)

    def start(self) -> ChaosProxy:
        """Bind the listening socket and start forwarding."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.listen_host, self._listen_port))
            listener.listen(128)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._stopping.clear()
        self._listener = listener
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"chaos-proxy-{self.port}", daemon=True
        )
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and the listener; wait (bounded) for the threads."""
        if self._listener is None:
            return
        self._stopping.set()
        deadline = time.monotonic() + timeout
        if self._acceptor is not None:
            self._acceptor.join(max(0.1, deadline - time.monotonic()))
        with self._lock:
            links = list(self._links)
        for link in links:
            link.shutdown()
        for link in links:
            link.thread.join(max(0.1, deadline - time.monotonic()))
        self._listener.close()
        self._listener = None
        self._acceptor = None

    def __enter__(self) -> ChaosProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults -----------------------------------------------------------------------------

    def cut(self, timeout: float = 5.0) -> None:
        """Reset every open connection and reset new ones until :meth:`heal`."""
        self._mode = _CUT
        self._generation += 1
        self._wait_drained(timeout)

    def blackhole(self) -> None:
        """Accept, but forward nothing in either direction until :meth:`heal`."""
        self._mode = _BLACKHOLE

    def delay(self, seconds: float) -> None:
        """Hold each forwarded chunk ``seconds`` before passing it on (0 to stop)."""
        self._delay = max(0.0, float(seconds))

    def heal(self) -> None:
        """Forward normally again, without delay."""
        self._delay = 0.0
        self._mode = _PASS

    # -- internals --------------------------------------------------------------------------

    def _wait_drained(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            time.sleep(_TICK / 2)

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if not selector.select(_TICK):
                    continue
                try:
                    client, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    if self._stopping.is_set():
                        break
                    continue
                client.setblocking(True)
                if self._mode == _CUT or self._stopping.is_set():
                    _reset(client)
                    continue
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                link = _Link(self, client)
                with self._lock:
                    self._links.add(link)
                link.thread.start()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a proxy in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m resilient_db_testbed.proxy")
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT to listen on")
    parser.add_argument("--target", type=_address, required=True, help="HOST:PORT to forward to")
    parser.add_argument("--pidfile", type=Path, help="write the process id here")
    args = parser.parse_args(argv)
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    listen_host, listen_port = args.listen
    target_host, target_port = args.target
    proxy = ChaosProxy(target_host, target_port, listen_port, listen_host=listen_host)
    proxy.start()
    if args.pidfile is not None:
        args.pidfile.write_text(f"{os.getpid()}\n")
    print(f"forwarding {listen_host}:{proxy.port} -> {args.target[0]}:{args.target[1]}", flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        proxy.stop()
        if args.pidfile is not None:
            args.pidfile.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
