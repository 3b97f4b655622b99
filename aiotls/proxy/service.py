"""The running proxy: the TLS server, reloads (SIGHUP and file changes), session ticket key
rotation, the metrics endpoint, the access log, and the graceful drain (SIGTERM).

:func:`run_proxy` is the whole life of one proxy process (or of one worker, given a
listening socket); :class:`Proxy` is the same in parts, for embedding and tests;
:func:`run_proxy_workers` runs it in worker processes under
:func:`aiotls.workers.supervise`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import signal
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import ClientHello, Server, TLSTransport, create_server, features
from ..workers import WorkerChannel, supervise
from .accesslog import AccessLog
from .config import ProxyConfig, ProxyConfigError, load_config
from .metrics import Labels, Metrics, serve_metrics
from .pipe import Pipe
from .routing import RouteTable

__all__ = ["Proxy", "run_proxy", "run_proxy_workers"]

log = logging.getLogger("aiotls.proxy")

#: Ticket key rotation where the configuration does not say and OpenSSL allows it.
DEFAULT_TICKET_KEY_ROTATION = 12 * 3600.0

_Stat = dict[Path, tuple[int, int, int] | None]


def _stat(files: list[Path]) -> _Stat:
    """What identifies each file's current content: inode, size and mtime."""
    stats: _Stat = {}
    for path in files:
        try:
            st = path.stat()
        except OSError:
            stats[path] = None
        else:
            stats[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return stats


class Proxy:
    """A TLS terminator built from a :class:`ProxyConfig`.

    The routes' contexts are built here, so a certificate that cannot be used raises
    :class:`ProxyConfigError` now. :meth:`start` listens; :meth:`drain` stops
    listening, lets connections finish until ``drain_timeout``, then cuts the rest.
    """

    def __init__(self, config: ProxyConfig, *, supervised: bool = False) -> None:
        self.config = config
        # A worker under aiotls.workers.supervise: the supervisor shares and rotates the
        # ticket keys and reloads (a new generation); this process neither rotates nor
        # watches the files.
        self._supervised = supervised
        self.table = RouteTable(config)
        self.metrics = Metrics()
        self.server: Server | None = None
        self.metrics_server: asyncio.Server | None = None
        self._access_log = AccessLog(config.access_log) if config.access_log else None
        self._pipes: set[Pipe] = set()
        self._open: Counter[str] = Counter()
        self._bytes_keys: dict[tuple[str, str], Labels] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._rotation = 0.0 if supervised else self._ticket_key_rotation(config)

    @staticmethod
    def _ticket_key_rotation(config: ProxyConfig) -> float:
        """Seconds between ticket keys (0: OpenSSL's own); refuses an explicit rotation
        this OpenSSL build cannot do."""
        available = features()["ticket_keys"]
        if config.ticket_key_rotation is None:
            return DEFAULT_TICKET_KEY_ROTATION if available else 0.0
        if config.ticket_key_rotation and not available:
            raise ProxyConfigError(
                "ticket_key_rotation: this OpenSSL build gives no access to ticket keys "
                '(aiotls.features()["ticket_keys"] is False); set it to "off"'
            )
        return config.ticket_key_rotation

    # -- life --------------------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on ``sock`` (a worker's share of a listening socket) or on the
        configured address; start the metrics endpoint and the timers."""
        config = self.config
        options: dict[str, Any] = {}
        if self.table.uses_alpn:
            options["alpn_protocols"] = self._select_alpn
        if any(route.ocsp_stapling == "auto" for route in config.routes):
            options["ocsp_stapling"] = "auto"
        if self._access_log is not None and features()["client_hello_cb"]:
            options["on_client_hello"] = _keep_client_hello
        where: dict[str, Any] = {"sock": sock}
        if sock is None and config.listen.path is not None:
            where = {"path": config.listen.path}
        elif sock is None:
            where = {"host": config.listen.host, "port": config.listen.port}
        try:
            self.server = await create_server(
                lambda: Pipe(self, self.table),
                context=self.table.listening_context,
                sni_callback=self._sni_callback,
                on_tls_client_error=self._handshake_failed,
                handshake_timeout=config.handshake_timeout,
                shutdown_timeout=config.shutdown_timeout,
                **where,
                **options,
            )
        except TypeError as exc:
            if "ocsp_stapling" in options and "ocsp_stapling" in str(exc):
                raise ProxyConfigError(
                    'ocsp_stapling = "auto": this aiotls has no automatic OCSP stapling'
                ) from exc
            raise
        if self._rotation:
            self.rotate_ticket_keys()
            self._tasks.append(asyncio.create_task(self._rotate_every(self._rotation)))
        if config.watch_interval and not self._supervised:
            self._tasks.append(asyncio.create_task(self._watch(config.watch_interval)))
        if config.metrics is not None:
            metrics = config.metrics
            self.metrics_server = await serve_metrics(
                self.render_metrics, metrics.host, metrics.port, metrics.path
            )

    def stop(self) -> None:
        """Ask :func:`run_proxy` to drain and return (what SIGTERM does)."""
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def drain(self, *, wait: bool = True) -> int:
        """Stop accepting, wait up to ``drain_timeout`` for the connections to end, then
        cut those still open; returns how many were cut. ``wait=False`` cuts at once
        (a worker whose supervisor already gave them their time)."""
        for task in self._tasks:
            task.cancel()
        if self.metrics_server is not None:
            self.metrics_server.close()
        cut = 0
        if self.server is not None:
            self.server.close()
            log.info("draining: %d connections open", self.server.get_connections())
            try:
                if not wait and self._pipes:
                    raise TimeoutError
                async with asyncio.timeout(self.config.drain_timeout or None):
                    await self.server.wait_closed()
            except TimeoutError:
                cut = len(self._pipes)
                log.warning("drain deadline: cutting %d connections still open", cut)
                for pipe in list(self._pipes):
                    pipe.drain_deadline()
                with contextlib.suppress(TimeoutError):  # their log lines, then go
                    async with asyncio.timeout(1.0):
                        await self.server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._access_log is not None:
            self._access_log.close()
        return cut

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drain()

    # -- addresses ---------------------------------------------------------------------

    def address(self) -> str:
        """Where the proxy listens: ``host:port`` or ``unix:/path``."""
        assert self.server is not None
        return _sockname(self.server.sockets[0])

    def metrics_address(self) -> str | None:
        if self.metrics_server is None:
            return None
        return _sockname(self.metrics_server.sockets[0])

    # -- routing hooks (the current generation answers) ---------------------------------

    def _sni_callback(self, servername: str | None) -> Any:
        return self.table.sni_callback(servername)

    def _select_alpn(self, offered: list[str], servername: str | None) -> str | None:
        return self.table.select_alpn(offered, servername)

    def _handshake_failed(self, exc: Exception, transport: TLSTransport) -> None:
        pipe = transport.get_protocol()
        if isinstance(pipe, Pipe):
            pipe.handshake_failed(exc, transport)

    # -- connections -------------------------------------------------------------------

    def admit(self, pipe: Pipe) -> bool:
        """Count an established connection on its route, unless the route is full."""
        route = pipe.route
        assert route is not None
        if route.max_connections is not None and self._open[route.name] >= route.max_connections:
            return False
        self._open[route.name] += 1
        self._pipes.add(pipe)
        return True

    def count_bytes(self, pipe: Pipe, direction: str, n: int) -> None:
        route = pipe.route.name if pipe.route is not None else ""
        key = self._bytes_keys.get((route, direction))
        if key is None:  # one label tuple per route and direction, not one per chunk
            key = (("route", route), ("direction", direction))
            self._bytes_keys[(route, direction)] = key
        self.metrics.bytes[key] += n

    def finished(self, pipe: Pipe, route: str, outcome: str, record: dict[str, Any]) -> None:
        """A connection ended: its access-log line and counters."""
        if pipe in self._pipes:
            self._pipes.discard(pipe)
            self._open[route] -= 1
        self.metrics.connections[(("route", route), ("outcome", outcome))] += 1
        if self._access_log is not None:
            self._access_log.write(record)
        elif outcome != "ok":  # without an access log, what went wrong still leaves a line
            log.info("%s: %s: %s", record["peer"] or "a client", outcome, record["error"])

    def render_metrics(self) -> str:
        handshaking = (self.server.get_connections() if self.server else 0) - len(self._pipes)
        return self.metrics.render(
            {
                "aiotls_proxy_connections_open": (
                    "Connections past their handshake and still open, by route.",
                    sorted(((("route", name),), n) for name, n in self._open.items()),
                ),
                "aiotls_proxy_handshakes_in_progress": (
                    "Accepted connections still in their TLS handshake.",
                    [((), max(handshaking, 0))],
                ),
                "aiotls_proxy_buffered_bytes": (
                    "Bytes waiting in the proxy's write buffers, both directions.",
                    [((), sum(pipe.buffered for pipe in self._pipes))],
                ),
            }
        )

    # -- reloads and ticket keys -------------------------------------------------------

    def reload(self) -> bool:
        """Read the configuration (its file, or the same files) again and use it for new
        connections; live ones go on untouched. On any error the running configuration
        stays, the error is logged, and this returns False."""
        old = self.config
        try:
            config = load_config(old.path) if old.path is not None else old
            table = RouteTable(config)
            fixed = _fixed_settings(old, config)
            if fixed:
                raise ProxyConfigError(f"{fixed} changed: restart the proxy to apply that")
            if table.uses_alpn != self.table.uses_alpn:
                raise ProxyConfigError("ALPN routing turned on or off: restart to apply that")
            access_log = AccessLog(config.access_log) if config.access_log else None
        except (ProxyConfigError, OSError) as exc:
            self.metrics.reloads[(("result", "failed"),)] += 1
            log.error("reload failed, the running configuration stays: %s", exc)
            return False
        assert self.server is not None
        keys = self.server.get_ticket_keys() if features()["ticket_keys"] else None
        self.server.set_secure_context(table.listening_context)
        if keys is not None:
            self.server.set_ticket_keys(keys)  # sessions resume across the reload
        self.config, self.table = config, table
        if self._access_log is not None:
            self._access_log.close()
        self._access_log = access_log
        self.metrics.reloads[(("result", "ok"),)] += 1
        log.info("reloaded: %d routes", len(config.routes))
        return True

    def rotate_ticket_keys(self) -> None:
        """New session ticket keys. OpenSSL holds one key, so tickets issued under the
        old one no longer resume (those clients make a full handshake)."""
        assert self.server is not None
        self.server.set_ticket_keys(os.urandom(80))
        self.metrics.ticket_key_rotations += 1

    async def _rotate_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.rotate_ticket_keys()

    async def _watch(self, interval: float) -> None:
        """Poll the configuration's files; reload when one changes."""
        seen = _stat(self.config.files())
        while True:
            await asyncio.sleep(interval)
            now = _stat(self.config.files())
            if now != seen:
                self.reload()
                seen = now if list(now) == self.config.files() else _stat(self.config.files())


def run_proxy_workers(
    config: ProxyConfig,
    workers: int,
    *,
    loop: str | None = None,
    on_ready: Callable[[Proxy], Any] | None = None,
) -> None:
    """Run the proxy in ``workers`` processes on the configured TCP address until SIGTERM.

    Blocks (see :func:`aiotls.workers.supervise`). The supervisor shares the session ticket
    keys and rotates them every ``ticket_key_rotation`` (so a session resumes on any
    worker); SIGHUP reloads by re-reading the configuration in the supervisor (a bad one
    keeps the running workers) and starting a new generation; SIGTERM drains every worker
    for ``drain_timeout``. ``on_ready(proxy)`` runs in worker 0 of the first generation
    once it listens. Refuses what workers cannot share: a unix socket, a metrics endpoint.
    """
    if config.listen.path is not None:
        raise ProxyConfigError("listen: workers share a TCP port, not a unix socket")
    if config.metrics is not None:
        raise ProxyConfigError("metrics: not with workers (each would count only its own)")
    prepared: list[ProxyConfig] = []

    def prepare() -> ProxyConfig:
        """A generation's configuration: the file read again for each reload."""
        if not prepared:
            new = config
        else:
            new = load_config(config.path) if config.path is not None else config
            RouteTable(new)  # a certificate that cannot be used refuses the reload
            if fixed := _fixed_settings(prepared[-1], new):
                raise ProxyConfigError(f"{fixed} changed: restart the proxy to apply that")
        prepared.append(new)
        del prepared[:-1]
        return new

    async def worker(sock: socket.socket, channel: WorkerChannel[ProxyConfig]) -> None:
        proxy = Proxy(channel.config, supervised=True)
        await proxy.start(sock)
        try:
            if on_ready is not None and channel.worker_id == 0 and channel.generation == 1:
                result = on_ready(proxy)
                if inspect.isawaitable(result):
                    await result
            assert proxy.server is not None
            await channel.serve(proxy.server)  # closes it, then gives connections their time
        finally:
            await proxy.drain(wait=False)

    rotation = Proxy._ticket_key_rotation(config)
    supervise(
        worker,
        workers=workers,
        host=config.listen.host,
        port=config.listen.port,
        loop=loop,
        prepare=prepare,
        ticket_key_interval=rotation or None,
        graceful_timeout=config.drain_timeout or math.inf,  # 0: "off", no deadline
    )


def _keep_client_hello(hello: ClientHello) -> None:
    """The access log's ``ja4``: with this hook the transport keeps the parsed hello;
    it decides nothing (routing stays with SNI and ALPN)."""


def _fixed_settings(old: ProxyConfig, new: ProxyConfig) -> str | None:
    """The name of a setting a reload cannot change (the listening sockets')."""
    for name in ("listen", "metrics"):
        if getattr(old, name) != getattr(new, name):
            return name
    if {r.ocsp_stapling for r in old.routes} != {r.ocsp_stapling for r in new.routes}:
        return "ocsp_stapling"
    return None


def _sockname(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, tuple):
        return f"[{name[0]}]:{name[1]}" if ":" in name[0] else f"{name[0]}:{name[1]}"
    return f"unix:{name}"


async def run_proxy(
    config: ProxyConfig | str | os.PathLike[str],
    sock: socket.socket | None = None,
    *,
    on_ready: Callable[[Proxy], Any] | None = None,
    handle_signals: bool = True,
) -> int:
    """Run a proxy until SIGTERM or SIGINT (or :meth:`Proxy.stop`), then drain it.

    ``config`` is a :class:`ProxyConfig` or a TOML file's path; ``sock`` a listening
    socket to serve instead of the configured address (a worker of a multi-process
    server). ``on_ready(proxy)`` (plain or async) is called once it listens. With
    ``handle_signals``, SIGHUP reloads. Returns how many connections the drain cut.
    """
    if not isinstance(config, ProxyConfig):
        config = load_config(config)
    proxy = Proxy(config)
    await proxy.start(sock)
    loop = asyncio.get_running_loop()
    handlers = {signal.SIGTERM: proxy.stop, signal.SIGINT: proxy.stop, signal.SIGHUP: proxy.reload}
    try:
        if handle_signals:
            for signum, handler in handlers.items():
                loop.add_signal_handler(signum, handler)
        if on_ready is not None:
            result = on_ready(proxy)
            if inspect.isawaitable(result):
                await result
        await proxy.wait_stopped()
    finally:
        if handle_signals:
            for signum in handlers:
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(signum)
        cut = await proxy.drain()
    return cut
