"""The RQ adapter passes the Serve group of the conformance suite on Redis.

The broker outage is real: the replicas reach Redis through a TCP proxy of
this test process, which drops every connection and refuses new ones for the
outage (the shared Redis server itself stays up for everyone else).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from taskserve import TaskProcessorConfig
from taskserve_conformance import BrokerHarness
from taskserve_conformance.serve import ServeConformance
from taskserve_rq import RQAdapterConfig
from taskserve_rq.testing import RQHarness

pytest_plugins = ["taskserve_conformance.plugin"]

REDIS_URL = os.environ.get("TASKSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class TcpProxy:
    """Forwards a local port to ``target``; :meth:`outage` cuts it off."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="redis-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                with self._lock:
                    self._sockets.discard(sock)

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Drop every connection and refuse new ones inside the block."""
        self._up.clear()
        with self._lock:
            cut = list(self._sockets)
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        try:
            yield
        finally:
            self._up.set()

    def close(self) -> None:
        """Stop listening."""
        self._server.close()


@pytest.fixture(scope="session")
def redis_proxy() -> Iterator[TcpProxy]:
    parts = urlsplit(REDIS_URL)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    yield proxy
    proxy.close()


class TestRQServe(ServeConformance):
    serve_group = "serve-ray-3"  # the Serve classes share three Ray instances (scripts/test.sh)
    adapter = "rq"

    @pytest.fixture
    def adapter_config(self, redis_proxy: TcpProxy) -> RQAdapterConfig:
        parts = urlsplit(REDIS_URL)
        proxied = parts._replace(netloc=f"127.0.0.1:{redis_proxy.port}").geturl()
        return RQAdapterConfig(redis_url=proxied, key_prefix=f"tsc-rq-{uuid.uuid4().hex[:12]}")

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return RQHarness()

    @pytest.fixture(autouse=True)
    def _proxy(self, redis_proxy: TcpProxy) -> None:
        self.redis_proxy = redis_proxy

    @contextlib.contextmanager
    def broker_outage(self, config: TaskProcessorConfig) -> Iterator[None]:
        """Cut the replicas' connections to Redis (through the proxy)."""
        with self.redis_proxy.outage():
            yield
