"""The office server's defences against stalled connections and token guessing.

uvicorn closes a keep-alive connection idle after a response, but nothing else:
a client that sends half its headers, or a body a byte a minute, holds its
connection (and, for a body, a request task) for ever, and a few hundred of them
starve the server. ``guarded_protocol`` is uvicorn's h11 protocol with three
more rules:

* the request head must be complete within ``header_timeout`` seconds of the
  connection (or of the previous response), however slowly it trickles in;
* the body must be complete within ``body_timeout`` seconds of the head;
* at most ``max_connections`` connections are open; one more is answered 503 and
  closed at once.

A connection that breaks a deadline gets 408 and is closed; the device's client
retries 408 like a network error. ``FailureLimiter`` counts failed
authentications per client address (a token bucket): past the burst, requests
from that address get 429 with Retry-After until the bucket refills, before any
token is looked at.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_503 = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 5\r\nconnection: close\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0   # seconds for a request head
    body_timeout: float = 60.0     # seconds for a body (2 MB at 35 KB/s, a weak farm Wi-Fi link)
    max_connections: int = 64      # open at once; a farm has a handful of handhelds


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` that enforces ``limits``."""
    live: set[asyncio.Protocol] = set()

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _phase: object = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            live.add(self)
            if len(live) > limits.max_connections:
                transport.write(_503)
                transport.close()
                return
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            live.discard(self)
            self._cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch()

        # -- deadlines -----------------------------------------------------------------------
        def _watch(self) -> None:
            """(Re)arm the deadline of the phase the peer is in; trickled bytes never extend it."""
            phase = self.conn.their_state
            if phase is self._phase:
                return
            self._phase = phase
            self._cancel()
            if phase is h11.IDLE:
                self._deadline = self.loop.call_later(limits.header_timeout, self._expired)
            elif phase is h11.SEND_BODY:
                self._deadline = self.loop.call_later(limits.body_timeout, self._expired)

        def _cancel(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(_408)
            self.transport.close()

    return GuardedH11Protocol


class FailureLimiter:
    """Failed authentications per client address, as a token bucket: ``burst`` failures at once,
    then one per ``refill_s`` seconds. Thread-safe; remembers at most ``max_clients`` addresses."""

    def __init__(self, *, burst: int = 10, refill_s: float = 6.0, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.burst, self.refill_s, self.max_clients, self.clock = burst, refill_s, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) / self.refill_s)

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None when it may try now."""
        with self._lock:
            tokens = self._tokens(client, self.clock())
        if tokens >= 1.0:
            return None
        return max(1, math.ceil((1.0 - tokens) * self.refill_s))

    def failed(self, client: str) -> None:
        """Count one failed authentication from ``client``."""
        with self._lock:
            now = self.clock()
            self._buckets[client] = (max(0.0, self._tokens(client, now) - 1.0), now)
            self._buckets.move_to_end(client)
            while len(self._buckets) > self.max_clients:  # the least recently failing go first
                self._buckets.popitem(last=False)
