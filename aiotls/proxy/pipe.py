"""The forwarding pipe: one client connection (TLS, terminated here) joined to one backend
connection (plaintext TCP or a unix socket).

Flow control runs end to end: when the backend's write buffer passes its high-water
mark the client is no longer read, and when the client's is full the backend is no
longer read, so a slow peer on either side holds at most a buffer's worth here.
Half-closes pass through (the client's close_notify becomes the backend's FIN and the
backend's FIN the client's close_notify); an error on one side aborts the other, so
that a truncated stream never looks complete. No bytes in either direction for
``idle_timeout`` seconds close both.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Any, Protocol, cast

from .._cli_common import handshake_facts
from ..errors import TLSHandshakeTimeout
from .accesslog import ja4
from .config import ProxyConfig, Route
from .metrics import Metrics
from .proxy_protocol import TLSFacts, encode_v2
from .routing import NoRoute, RouteTable, client_cn, refusal

__all__ = ["Pipe", "PipeOwner"]


class PipeOwner(Protocol):
    """What a pipe asks of the proxy that owns it (aiotls.proxy.service.Proxy)."""

    config: ProxyConfig
    table: RouteTable
    metrics: Metrics

    def admit(self, pipe: Pipe) -> bool: ...

    def count_bytes(self, pipe: Pipe, direction: str, n: int) -> None: ...

    def finished(self, pipe: Pipe, route: str, outcome: str, record: dict[str, Any]) -> None: ...


log = logging.getLogger("aiotls.proxy")

_RAGGED_EOF = "ERR_SSL_UNEXPECTED_EOF_WHILE_READING"
#: The access-log fields the handshake fills in, in their order on the line.
_TLS_FIELDS = (
    "sni",
    "alpn",
    "version",
    "cipher",
    "group",
    "ja4",
    "resumed",
    "client_cn",
    "handshake_ms",
)


def _peer(name: object) -> str | None:
    if isinstance(name, tuple):
        host = f"[{name[0]}]" if ":" in name[0] else name[0]
        return f"{host}:{name[1]}"
    return str(name) if name else None


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"


class _Backend(asyncio.Protocol):
    """The backend connection's protocol: every event goes to the pipe."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.pipe._backend_made(cast(asyncio.Transport, transport))  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.pipe._from_backend(data)

    def eof_received(self) -> bool:
        return self.pipe._backend_eof()

    def pause_writing(self) -> None:
        self.pipe._hold("backend full")

    def resume_writing(self) -> None:
        self.pipe._release("backend full")

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe._backend_lost(exc)


class Pipe(asyncio.Protocol):
    """The application protocol of one accepted TLS connection (made at accept time)."""

    def __init__(self, proxy: PipeOwner, table: RouteTable) -> None:
        self._proxy = proxy
        self._table = table  # the configuration generation current at accept
        self._loop = asyncio.get_running_loop()
        self._accepted = self._loop.time()
        self._started = time.time()
        self._client: asyncio.Transport | None = None
        self._backend: asyncio.Transport | None = None
        self._connecting: asyncio.Task[None] | None = None
        self.route: Route | None = None
        self._record: dict[str, Any] = {}
        self._outcome: str | None = None
        self._error: str | None = None
        self.bytes_in = self.bytes_out = 0
        self._client_eof = self._backend_eofed = False
        self._client_lost = False
        self._backend_gone = True  # until a backend connection is under way
        self._client_full = False
        self._holds: set[str] = set()  # why the client is not read
        self._last = self._accepted
        self._idle: asyncio.TimerHandle | None = None
        self._finished = False

    # -- the client (TLS) side ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The handshake succeeded: pick the route, apply its policy, connect the backend."""
        transport = cast(asyncio.Transport, transport)  # a TLSTransport
        self._client = transport
        proxy, tls = self._proxy, transport.get_extra_info("tls")
        seconds = self._loop.time() - self._accepted
        proxy.metrics.handshake("ok", seconds, resumed=tls.session_reused)
        facts = handshake_facts(tls)
        cert = tls.get_peer_x509_certificate()
        self._record.update(
            sni=facts["servername"],
            alpn=facts["alpn"],
            version=facts["protocol"],
            cipher=facts["cipher"],
            group=facts["group"],
            ja4=ja4(tls),
            resumed=facts["session_reused"],
            client_cn=client_cn(cert),
            handshake_ms=round(seconds * 1000, 3),
        )
        self._hold("connecting")
        used = transport.get_extra_info("sslcontext")
        table = self._table if self._table.owns(used) else proxy.table
        route = table.route_for(facts["servername"], facts["alpn"])
        if route is None:
            self._end("no_route", f"no route serves {facts['servername'] or 'no SNI'}")
            return
        self.route = route
        reason = refusal(route, used, table.context_of(route), tls)
        if reason is not None:
            self._end("forbidden", reason)
            return
        if not proxy.admit(self):
            self._end("limit", f"route {route.name!r} has {route.max_connections} connections")
            return
        self._arm_idle()
        transport.set_write_buffer_limits(high=proxy.config.buffer_size)
        facts_v2 = TLSFacts(
            version=facts["protocol"],
            cipher=facts["cipher"],
            servername=facts["servername"],
            alpn=facts["alpn"],
            client_cn=self._record["client_cn"],
            client_cert=cert is not None,
            verified=bool(tls.authorized),
            resumed=facts["session_reused"],
        )
        self._backend_gone = False
        self._connecting = self._loop.create_task(self._connect(route, facts_v2))
        self._connecting.add_done_callback(self._connect_done)

    def data_received(self, data: bytes) -> None:
        assert self._backend is not None  # the client is not read until it is connected
        self.bytes_in += len(data)
        self._last = self._loop.time()
        self._proxy.count_bytes(self, "in", len(data))
        self._backend.write(data)

    def eof_received(self) -> bool:
        """The client's close_notify: the backend gets FIN (or is closed when it is done)."""
        self._client_eof = True
        backend = self._backend
        if backend is not None and not backend.is_closing():
            if self._backend_eofed:
                backend.close()
            else:
                backend.write_eof()
        return True  # the TLS transport closes once the backend's side is done too

    def pause_writing(self) -> None:
        self._client_full = True
        if self._backend is not None:
            self._backend.pause_reading()

    def resume_writing(self) -> None:
        self._client_full = False
        if self._backend is not None and not self._backend.is_closing():
            self._backend.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._client_lost = True
        # A client that drops TCP without close_notify once the backend had finished
        # lost nothing; before that, its stream may be cut short.
        if exc is not None and not (
            getattr(exc, "code", None) == _RAGGED_EOF and self._backend_eofed
        ):
            self._end("client_error", _describe(exc))
        elif self._backend is not None and not self._backend.is_closing():
            self._backend.close()  # after what the client sent went out
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        self._finish_if_done()

    def handshake_failed(self, exc: Exception, transport: Any) -> None:
        """The server's on_tls_client_error for this connection: log it and end."""
        if isinstance(exc, TLSHandshakeTimeout):
            outcome, result = "handshake_timeout", "timeout"
        else:
            outcome, result = "handshake_failed", "failed"
            if isinstance(exc.__cause__, NoRoute):
                outcome = "no_route"
        self._proxy.metrics.handshake(result)
        try:
            self._record["sni"] = transport.servername
            self._record["ja4"] = ja4(transport)
        except Exception:  # the engine may be gone; the name is only for the log
            self._record["sni"] = None
        self._client_lost = True
        self._end(outcome, _describe(exc), peer=transport.get_extra_info("peername"))
        self._finish_if_done()

    # -- the backend side --------------------------------------------------------------

    async def _connect(self, route: Route, facts: TLSFacts) -> None:
        """Connect the backend, send the PROXY header, then let the client's bytes follow."""
        backend, config = route.backend, self._proxy.config
        try:
            async with asyncio.timeout(config.connect_timeout):
                if backend.path is not None:
                    await self._loop.create_unix_connection(lambda: _Backend(self), backend.path)
                else:
                    assert backend.host is not None and backend.port is not None
                    await self._loop.create_connection(
                        lambda: _Backend(self), backend.host, backend.port
                    )
        except (OSError, TimeoutError) as exc:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            log.warning("route %r: backend %s unavailable: %s", route.name, backend, reason)
            self._end("backend_unavailable", f"{backend}: {reason}")
            return
        transport, client = self._backend, self._client
        if transport is None or transport.is_closing() or client is None:
            return
        transport.set_write_buffer_limits(high=config.buffer_size)
        if route.proxy_protocol:
            peer, us = client.get_extra_info("peername"), client.get_extra_info("sockname")
            transport.write(encode_v2(peer, us, facts))
        if self._client_eof:
            transport.write_eof()
        self._release("connecting")

    def _connect_done(self, task: asyncio.Task[None]) -> None:
        """Without a backend connection (it failed, or the client left first), nothing
        more will come from that side."""
        if self._backend is None:
            self._backend_gone = True
            self._finish_if_done()

    def _backend_made(self, transport: asyncio.Transport) -> None:
        self._backend = transport
        if self._outcome is not None or self._client_lost:
            transport.abort()  # the client went away while we connected
        elif self._client_full:
            transport.pause_reading()

    def _from_backend(self, data: bytes) -> None:
        client = self._client
        assert client is not None
        self.bytes_out += len(data)
        self._last = self._loop.time()
        self._proxy.count_bytes(self, "out", len(data))
        client.write(data)

    def _backend_eof(self) -> bool:
        """The backend's FIN: the client gets close_notify, and reading goes on."""
        self._backend_eofed = True
        if self._client is not None and not self._client.is_closing():
            self._client.write_eof()
        return not self._client_eof  # both directions done: let asyncio close it

    def _backend_lost(self, exc: Exception | None) -> None:
        self._backend_gone = True
        if exc is not None:
            self._end("backend_error", _describe(exc))
        elif not self._backend_eofed and self._client and not self._client.is_closing():
            # Closed without a FIN we saw, and not by us (we close it after the client).
            self._end("backend_error", "backend closed the connection")
        self._finish_if_done()

    # -- both --------------------------------------------------------------------------

    def _hold(self, why: str) -> None:
        """Stop reading the client for ``why`` (until every reason is released)."""
        if not self._holds and self._client is not None:
            self._client.pause_reading()
        self._holds.add(why)

    def _release(self, why: str) -> None:
        self._holds.discard(why)
        client = self._client
        if not self._holds and client is not None and not client.is_closing():
            client.resume_reading()

    def _arm_idle(self) -> None:
        idle = self._proxy.config.idle_timeout
        if idle:
            self._idle = self._loop.call_at(self._last + idle, self._check_idle)

    def _check_idle(self) -> None:
        if self._loop.time() - self._last >= self._proxy.config.idle_timeout:
            self._idle = None
            self._end("idle_timeout", f"no data for {self._proxy.config.idle_timeout:g} s")
        else:
            self._arm_idle()

    def _end(self, outcome: str, error: str | None, *, peer: object = None) -> None:
        """End the connection for ``outcome`` (the first reason given is the one logged).

        A refusal or a timeout closes both sides cleanly; an error or a drain aborts the
        other side, so that its peer cannot take a cut stream for a complete one.
        """
        if self._outcome is None:
            self._outcome, self._error = outcome, error
            if peer is not None:
                self._record["peer"] = _peer(peer)
        abort = outcome in ("client_error", "backend_error", "drained")
        for transport in (self._client, self._backend):
            if transport is not None and not (transport.is_closing() and not abort):
                transport.abort() if abort else transport.close()

    def drain_deadline(self) -> None:
        """The drain's deadline passed with this connection still open."""
        self._end("drained", "still open at the drain deadline")

    def _finish_if_done(self) -> None:
        """Once both sides are gone: one access-log line and the metrics."""
        if self._finished or not self._client_lost or not self._backend_gone:
            return
        self._finished = True
        if self._idle is not None:
            self._idle.cancel()
        route = self.route.name if self.route is not None else None
        client = self._client
        if "peer" not in self._record and client is not None:
            self._record["peer"] = _peer(client.get_extra_info("peername"))
        outcome = self._outcome or "ok"
        record = {
            "time": datetime.datetime.fromtimestamp(self._started, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "peer": self._record.pop("peer", None),
            "route": route,
            "backend": str(self.route.backend) if self.route is not None else None,
            **{key: self._record.get(key) for key in _TLS_FIELDS},
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration": round(self._loop.time() - self._accepted, 6),
            "outcome": outcome,
            "error": self._error,
        }
        self._proxy.finished(self, route or "", outcome, record)

    @property
    def buffered(self) -> int:
        """Bytes waiting in this connection's write buffers (both directions)."""
        return sum(
            t.get_write_buffer_size() for t in (self._client, self._backend) if t is not None
        )
