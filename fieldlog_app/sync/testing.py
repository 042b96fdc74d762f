"""Test helpers for sync: a real server process on loopback and a fault-injecting HTTP proxy.

Used by tests/test_sync_*.py (like edgespec.testing for models). Nothing here is
used by the product; it is in the package so tests and manual experiments share it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``fieldlog-server`` in a subprocess (``python -m fieldlog_app.sync.server_cli``)."""

    def __init__(self, db: str | os.PathLike, port: int | None = None, *, max_body_bytes: int | None = None):
        self.db = str(db)
        self.port = port or free_port()
        self.max_body_bytes = max_body_bytes
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        cmd = [sys.executable, "-m", "fieldlog_app.sync.server_cli", "--db", self.db, "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning"]
        if self.max_body_bytes:
            cmd += ["--max-body-bytes", str(self.max_body_bytes)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"server exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not answer on {self.url} within {timeout} s")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SwappableApp:
    """An ASGI app that forwards to ``.app``: one uvicorn per test module, a fresh app per test."""

    def __init__(self, app=None):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


class ThreadServer:
    """An ASGI app under uvicorn in a background thread: real HTTP on loopback, in-process and fast."""

    def __init__(self, app, port: int | None = None, *, limits=None):
        """``limits``: a guard.ConnectionLimits to serve with the office's connection deadlines and cap."""
        import uvicorn

        from .guard import guarded_protocol

        self.port = port or free_port()
        extra = {"http": guarded_protocol(limits)} if limits is not None else {}
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                   lifespan="off", access_log=False, **extra))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        if not wait_for(lambda: self.server.started, timeout=10):
            raise RuntimeError("uvicorn did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _recv_until(sock: socket.socket, buf: bytearray, marker: bytes) -> int:
    while True:
        i = buf.find(marker)
        if i >= 0:
            return i
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk


def _recv_exact(sock: socket.socket, buf: bytearray, n: int) -> None:
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk


def _read_message(sock: socket.socket, buf: bytearray) -> tuple[bytes, bytes]:
    """One HTTP/1.1 message (head, body) with a Content-Length body (all our traffic has one)."""
    end = _recv_until(sock, buf, b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    _recv_exact(sock, buf, end + length)
    body = bytes(buf[end:end + length])
    del buf[:end + length]
    return head, body


class FaultProxy:
    """An HTTP/1.1 proxy on loopback that applies a script of faults, one action per request
    whose path starts with ``path_prefix`` (other requests pass through).

    Actions: ``pass``; ``drop_before`` (close without forwarding); ``drop_mid_body`` (forward
    half the body, then cut both sides: the server sees a disconnect); ``drop_after`` (forward,
    let the server commit and answer, then close the client's socket without the answer);
    ``status:CODE`` or ``status:CODE:RETRY_AFTER`` (answer that status without forwarding);
    ``call:NAME`` (run ``hooks[NAME]()`` then forward). After the script: ``pass``.
    ``latency`` seconds are added between the server's answer and relaying it, which
    widens the "server committed, device does not know yet" window crash tests aim at.
    """

    def __init__(self, upstream_port: int, script: list[str] | None = None, *, path_prefix: str = "/v1/batches",
                 hooks: dict | None = None, latency: float = 0.0):
        self.upstream_port = upstream_port
        self.latency = latency
        self.script = list(script or [])
        self.path_prefix = path_prefix.encode()
        self.hooks = hooks or {}
        self.log: list[tuple[str, str]] = []   # (path, action)
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _next_action(self, path: bytes) -> str:
        if not path.startswith(self.path_prefix):
            return "pass"
        with self._lock:
            action = self.script.pop(0) if self.script else "pass"
            self.log.append((path.decode(errors="replace"), action))
            return action

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        buf = bytearray()
        try:
            while True:
                head, body = _read_message(client, buf)
                path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
                action = self._next_action(path)
                if action == "drop_before":
                    return
                if action.startswith("status:"):
                    parts = action.split(":")
                    payload = b'{"error":"injected","message":"injected fault"}'
                    extra = f"Retry-After: {parts[2]}\r\n".encode() if len(parts) > 2 else b""
                    client.sendall(f"HTTP/1.1 {parts[1]} Injected\r\nContent-Type: application/json\r\n"
                                   f"Content-Length: {len(payload)}\r\nConnection: close\r\n".encode()
                                   + extra + b"\r\n" + payload)
                    return
                if action.startswith("call:"):
                    self.hooks[action[5:]]()
                with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30) as up:
                    if action == "drop_mid_body":
                        up.sendall(head + body[: len(body) // 2])
                        time.sleep(0.05)
                        return
                    up.sendall(head + body)
                    ubuf = bytearray()
                    rhead, rbody = _read_message(up, ubuf)
                if action == "drop_after":
                    return
                if self.latency and path.startswith(self.path_prefix):
                    time.sleep(self.latency)
                client.sendall(rhead + rbody)
        except (ConnectionError, OSError, ValueError):
            return
        finally:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()

    def close(self) -> None:
        self._stopped = True
        self._sock.close()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_sightings(store, n: int, *, seed: int = 0, block_prefix: str = "B") -> list[str]:
    """Finalize ``n`` valid, distinct sightings in ``store``; returns their ids (for tests and demos)."""
    import random

    rng = random.Random(seed)
    pests = [("grape berry moth", "larva", "clusters"), ("grape leafhopper", "adult", "leaves"),
             ("powdery mildew", "colonies", "leaves"), ("spotted lanternfly", "nymph", "vines")]
    ids = []
    for i in range(n):
        pest, stage, unit = rng.choice(pests)
        sampled = rng.randint(10, 100)
        note = {
            "block": f"{block_prefix}{rng.randint(1, 9)}", "variety": rng.choice(["Riesling", "Merlot", "Chardonnay"]),
            "rows": f"{rng.randint(1, 20)}-{rng.randint(21, 40)}", "date": f"2026-07-{rng.randint(1, 28):02d}",
            "scout": "T. Test", "weather": "22C, dry", "notes": f"stop {i} ünïcode ✓",
            "lat": round(42.0 + rng.random(), 6), "lon": round(-77.0 - rng.random(), 6),
            "observations": [{"pest": pest, "life_stage": stage, "unit": unit, "sampled": sampled,
                              "infested": rng.randint(0, sampled)}],
        }
        sid = store.save_draft(note)
        store.finalize(sid)
        ids.append(sid)
    return ids


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


__all__ = ["free_port", "ServerProcess", "ThreadServer", "SwappableApp", "FaultProxy", "make_sightings", "wait_for"]
