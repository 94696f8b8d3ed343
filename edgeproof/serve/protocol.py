"""The HTTP/1.1 connection layer: uvicorn's httptools protocol with the limits a hostile client meets first.

uvicorn applies no header size limit, no header or body read deadline and no connection cap, and
answers a request its parser cannot read with `text/plain`. Each connection here:

- may send at most `max_header_bytes` of request line and headers (431, then a lingering close;
  the bytes are counted before httptools buffers them, so memory stays flat);
- must finish its headers within `header_timeout` seconds of connecting (or of starting the next
  request) and its body within `body_timeout` seconds of the headers (408, or a close mid-body);
- counts against `max_connections`: over the cap the oldest connection that has been waiting for
  its headers for over a second is closed to make room (slowloris holds are evicted, so a health
  probe still gets in); if none can be evicted, the newcomer gets 503 with Retry-After;
- gets `{"error": ...}` JSON for a request the parser refuses (e.g. `Content-Length: abc`).

A response sent before the body was read (413, 401, 503) lets uvicorn read and discard the rest of
the body, up to `drain_bytes` and the body deadline, so clients that send the whole body before
reading (Python's urllib) see the status and its JSON instead of a reset. A refusal that closes
the connection shuts the write side first and reads on for a moment (a lingering close), for the same
reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger(__name__)
LINGER_S = 1.0  # how long a refused connection is read (and discarded) after its answer
EVICT_AFTER_S = 1.0  # a connection waiting this long for its headers may be closed to make room


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 64 * 2**10
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    drain_bytes: int = 64 * 2**20


def response_bytes(status: int, body: dict, extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    data = json.dumps(body).encode()
    head = [STATUS_LINE[status], b"content-type: application/json\r\n",
            b"content-length: " + str(len(data)).encode() + b"\r\n", b"connection: close\r\n"]
    head += [k + b": " + v + b"\r\n" for k, v in extra]
    return b"".join([*head, b"\r\n", data])


def make_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """A protocol class bound to these limits (uvicorn builds one instance per connection)."""

    class GuardedProtocol(HttpToolsProtocol):
        # phases: "header" (waiting for or reading a request head), "body", "app" (request read, app running),
        # "idle" (keep-alive between requests), "drain" (answered before the body was read), "closing"
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._timer: asyncio.TimerHandle | None = None
            self._header_bytes = self._drained = 0
            self._close_after = False
            self._enter("header", limits.header_timeout, self._header_late)
            if len(self.connections) > limits.max_connections and not self._evict_one():
                log.debug("connection cap reached (%d, --max-connections); answering 503", limits.max_connections)
                self._refuse(503, f"too many open connections (over {limits.max_connections}, --max-connections); "
                                  "retry shortly", ((b"retry-after", b"1"),))

        def _enter(self, phase: str, timeout: float | None = None, on_late=None) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._phase, self._since = phase, time.monotonic()
            if timeout:
                self._timer = self.loop.call_later(timeout, on_late)

        def _evict_one(self) -> bool:
            now, oldest = time.monotonic(), None
            for c in self.connections:
                if c is not self and getattr(c, "_phase", None) == "header" and now - c._since >= EVICT_AFTER_S \
                        and (oldest is None or c._since < oldest._since):
                    oldest = c
            if oldest is None:
                return False
            oldest._refuse(408, "closed to make room for new connections: the request head did not arrive in "
                                f"{now - oldest._since:.0f} s")
            return True

        def _refuse(self, status: int, message: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
            """Answer, stop writing, read and discard for LINGER_S, then close (never feed the parser again)."""
            if self._phase == "closing" or self.transport.is_closing():
                return
            self._enter("closing", LINGER_S, self._close_now)
            self.connections.discard(self)  # a lingering socket no longer counts against the cap
            self.transport.write(response_bytes(status, {"error": message}, extra))
            try:
                if self.transport.can_write_eof():
                    self.transport.write_eof()
            except OSError:
                self._close_now()

        def _close_now(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def _header_late(self) -> None:
            self._timer = None
            if self._phase == "header":
                log.debug("closing a connection whose request head did not arrive within %g s", limits.header_timeout)
                self._refuse(408, f"the request head did not arrive within {limits.header_timeout:g} s")

        def _body_late(self) -> None:
            self._timer = None
            if self._phase in ("body", "drain"):
                log.debug("closing a connection whose body did not arrive within %g s", limits.body_timeout)
                if self._phase == "drain" or self.cycle is None or self.cycle.response_started:
                    self._close_now()
                else:  # the app is waiting for the body: it sees a disconnect
                    self._refuse(408, f"the request body did not arrive within {limits.body_timeout:g} s")

        def connection_lost(self, exc) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self.parser is None:  # already lost (uvicorn sets it to None)
                return
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            phase = self._phase
            if phase == "closing":
                return  # lingering: discard
            if phase == "drain":
                self._drained += len(data)
                if self._drained > limits.drain_bytes:
                    self._close_now()
                    return
            super().data_received(data)
            if self._phase == "header" and not self.transport.is_closing():
                self._header_bytes += len(data)
                if self._header_bytes > limits.max_header_bytes:
                    log.debug("refusing a request head over %d bytes", limits.max_header_bytes)
                    self._refuse(431, f"request header too large (over {limits.max_header_bytes} bytes); send "
                                      "fewer or shorter headers")

        def send_400_response(self, msg: str) -> None:
            self._refuse(400, "malformed HTTP request: the request line or a header could not be parsed (e.g. a "
                              "Content-Length that is not a number); send a valid HTTP/1.1 request")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._phase != "header":
                self._header_bytes = 0
                self._enter("header", limits.header_timeout, self._header_late)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            # A client that asked to close (urllib sends 'Connection: close') is closed here, after its body has
            # been read, not by uvicorn right after an early answer: that would reset it mid-upload.
            self._close_after = self.cycle is not None and not self.cycle.keep_alive
            if self._close_after:
                self.cycle.keep_alive = True
            self._enter("body", limits.body_timeout, self._body_late)

        def on_message_complete(self) -> None:
            drained = self._phase == "drain"
            super().on_message_complete()
            self._enter("idle" if drained else "app")
            if drained and self._close_after:
                self._close_now()

        def on_response_complete(self) -> None:
            reading = self._phase == "body"
            super().on_response_complete()
            if reading:  # answered before the body was read: uvicorn discards the rest; keep the deadline running
                self._drained = 0
                self._phase = "drain"
            elif self._phase == "app":
                self._enter("idle")
                if self._close_after:
                    self._close_now()

    return GuardedProtocol
