"""The office server under stalled connections and token guessing (guard.py)."""

from __future__ import annotations

import socket

import httpx
import pytest

from fieldlog_app.sync.guard import ConnectionLimits, FailureLimiter
from fieldlog_app.sync.app import create_app
from fieldlog_app.sync.server import ServerDB
from fieldlog_app.sync.testing import ThreadServer, _read_message

DETECT = 30.0  # how long a test waits before calling a connection "never closed" (no bound on how fast)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_failure_limiter_allows_a_burst_then_refills():
    clock = Clock()
    lim = FailureLimiter(burst=3, refill_s=10.0, max_clients=2, clock=clock)
    for _ in range(3):
        assert lim.retry_after("a") is None
        lim.failed("a")
    assert lim.retry_after("a") == 10 and lim.retry_after("b") is None
    clock.t += 4
    assert lim.retry_after("a") == 6
    clock.t += 6
    assert lim.retry_after("a") is None
    lim.failed("b")
    lim.failed("c")  # a third address: the least recently failing one ("a") is forgotten
    assert set(lim._buckets) == {"b", "c"}


def test_failed_authentication_is_rate_limited_with_429(tmp_path):
    sdb = ServerDB(tmp_path / "server.db")
    token = sdb.add_device("handheld-1", role="reader")  # a reader, so its GET /v1/items answers 200 (issue 16)
    clock = Clock()
    app = create_app(sdb, limiter=FailureLimiter(burst=10, refill_s=6.0, clock=clock))
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url) as client:
        codes = [client.get("/v1/items", headers={"Authorization": f"Bearer fl_guess{i}"}).status_code
                 for i in range(300)]
        assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
        r = client.get("/v1/items", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 429 and r.headers["retry-after"] == "6"  # the guesser's address waits, whoever
        assert client.get("/v1/health").status_code == 200  # no token needed, nothing to limit
        clock.t += 6
        assert client.get("/v1/items", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        r = client.post("/v1/batches", content=b"{}", headers={"Authorization": "Bearer fl_guess",
                                                               "Content-Type": "application/json"})
        assert r.status_code == 401
        assert client.post("/v1/batches", content=b"{}", headers={"Authorization": f"Bearer {token}"}).status_code == 429


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=DETECT)
    return s


def _read_until_closed(s: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = s.recv(65536)  # socket.timeout (a test failure) if the server never closes it
        if not chunk:
            return data
        data += chunk


@pytest.fixture
def guarded(tmp_path):
    sdb = ServerDB(tmp_path / "server.db")
    limits = ConnectionLimits(header_timeout=0.5, body_timeout=0.5, max_connections=4)
    with ThreadServer(create_app(sdb), limits=limits) as srv:
        yield srv, sdb


def test_stalled_headers_and_bodies_are_closed_with_408(guarded):
    srv, sdb = guarded
    token = sdb.add_device("handheld-1").encode()
    half_head = _connect(srv.port)
    half_head.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: office\r\nContent-Type: applic")
    silent = _connect(srv.port)  # connects and says nothing
    half_body = _connect(srv.port)
    half_body.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: office\r\nAuthorization: Bearer " + token + b"\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"protocol\": 1")
    for s in (half_head, silent, half_body):
        assert _read_until_closed(s).startswith(b"HTTP/1.1 408")
        s.close()


def test_connections_beyond_the_cap_are_refused_and_the_server_recovers(guarded):
    srv, _ = guarded
    stalled = [_connect(srv.port) for _ in range(4)]
    for s in stalled:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: of")
    extra = _connect(srv.port)
    assert _read_until_closed(extra).startswith(b"HTTP/1.1 503")
    extra.close()
    for s in stalled:  # their deadline passes, they are closed and their places free
        assert _read_until_closed(s).startswith(b"HTTP/1.1 408")
        s.close()
    ok = _connect(srv.port)
    ok.sendall(b"GET /v1/health HTTP/1.1\r\nHost: office\r\nConnection: close\r\n\r\n")
    assert _read_until_closed(ok).startswith(b"HTTP/1.1 200")
    ok.close()


def test_a_client_that_keeps_up_is_not_cut_off(guarded):
    srv, _ = guarded
    s = _connect(srv.port)
    buf = bytearray()
    for _ in range(3):  # keep-alive: each request within its deadline, three in one connection
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: office\r\n\r\n")
        head, body = _read_message(s, buf)
        assert head.startswith(b"HTTP/1.1 200") and b'"protocol":1' in body
    s.close()
