"""The proxy's metrics and the ``/metrics`` endpoint (Prometheus text format 0.0.4).

Counters and the handshake latency histogram are kept here as the connections go;
gauges (open connections, buffered bytes) are read from the proxy at each scrape. The
endpoint is a small plain-HTTP server on its own address: one request per connection,
the request head bounded in size and time.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

__all__ = ["Metrics", "serve_metrics"]

log = logging.getLogger("aiotls.proxy")

#: Upper bounds (seconds) of the handshake latency buckets.
HANDSHAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_MAX_HEAD = 8192
_HEAD_TIMEOUT = 10.0

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (
        (k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")) for k, v in labels
    )
    return "{" + ",".join(f'{k}="{v}"' for k, v in escaped) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """Counters and a histogram, rendered with gauges the proxy supplies at scrape time."""

    def __init__(self) -> None:
        self.connections: Counter[Labels] = Counter()
        self.handshakes: Counter[Labels] = Counter()
        self.resumed = 0
        self.bytes: Counter[Labels] = Counter()
        self.reloads: Counter[Labels] = Counter()
        self.ticket_key_rotations = 0
        self._buckets = [0] * (len(HANDSHAKE_BUCKETS) + 1)
        self._latency_sum = 0.0

    def connection_ended(self, route: str, outcome: str, bytes_in: int, bytes_out: int) -> None:
        self.connections[(("route", route), ("outcome", outcome))] += 1
        self.bytes[(("route", route), ("direction", "in"))] += bytes_in
        self.bytes[(("route", route), ("direction", "out"))] += bytes_out

    def handshake(self, result: str, seconds: float | None = None, resumed: bool = False) -> None:
        """One handshake ended: ``ok`` (with its latency), ``failed`` or ``timeout``."""
        self.handshakes[(("result", result),)] += 1
        self.resumed += resumed
        if seconds is not None:
            self._buckets[bisect.bisect_left(HANDSHAKE_BUCKETS, seconds)] += 1
            self._latency_sum += seconds

    def render(self, gauges: Mapping[str, tuple[str, Iterable[tuple[Labels, float]]]]) -> str:
        """The exposition text: the counters, the histogram, then ``gauges`` (name ->
        (help, samples))."""
        out: list[str] = []

        def family(
            name: str, kind: str, help_: str, samples: Iterable[tuple[Labels, float]]
        ) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{_labels(k)} {_number(v)}" for k, v in samples)

        family(
            "aiotls_proxy_connections_total",
            "counter",
            "Connections that ended, by route and outcome.",
            sorted(self.connections.items()),
        )
        family(
            "aiotls_proxy_handshakes_total",
            "counter",
            "TLS handshakes by result (ok, failed, timeout).",
            sorted(self.handshakes.items()),
        )
        family(
            "aiotls_proxy_handshakes_resumed_total",
            "counter",
            "Successful handshakes that resumed a session.",
            [((), self.resumed)],
        )
        family(
            "aiotls_proxy_bytes_total",
            "counter",
            "Bytes forwarded, by route and direction (in: client to backend).",
            sorted(self.bytes.items()),
        )
        family(
            "aiotls_proxy_reloads_total",
            "counter",
            "Configuration reloads by result.",
            sorted(self.reloads.items()),
        )
        family(
            "aiotls_proxy_ticket_key_rotations_total",
            "counter",
            "Session ticket keys replaced.",
            [((), self.ticket_key_rotations)],
        )
        name = "aiotls_proxy_handshake_seconds"
        out.append(f"# HELP {name} Time from accepting a connection to its handshake's end.")
        out.append(f"# TYPE {name} histogram")
        total = 0
        for bound, count in zip((*HANDSHAKE_BUCKETS, "+Inf"), self._buckets, strict=True):
            total += count
            le = bound if isinstance(bound, str) else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {total}')
        out.append(f"{name}_sum {_number(self._latency_sum)}")
        out.append(f"{name}_count {total}")
        for gauge, (help_, samples) in gauges.items():
            family(gauge, "gauge", help_, samples)
        return "\n".join(out) + "\n"


async def serve_metrics(
    render: Callable[[], str], host: str | None, port: int | None, path: str | None
) -> asyncio.Server:
    """Start the endpoint: ``GET /metrics`` answers ``render()``; anything else is 404."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, target, *_ = [*head.split(b"\r\n", 1)[0].decode("latin-1").split(" "), ""]
            if method in ("GET", "HEAD") and target.split("?")[0] == "/metrics":
                status, kind, body = "200 OK", "text/plain; version=0.0.4", render().encode()
            else:
                status, kind, body = "404 Not Found", "text/plain", b"try /metrics\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (body if method != "HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a scraper that sends no complete request gets no answer
        except Exception:
            log.exception("metrics endpoint failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    if path is not None:
        return await asyncio.start_unix_server(answer, path, limit=_MAX_HEAD)
    return await asyncio.start_server(answer, host, port, limit=_MAX_HEAD)
