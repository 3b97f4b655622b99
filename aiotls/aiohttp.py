"""aiohttp over aiotls: :class:`TLSSite` and :func:`run_app` serve, :class:`TLSConnector` fetches.

Install with ``pip install 'aiotls[aiohttp]'``. The TLS keywords are aiotls's own
(context options such as ``key``, ``cert``, ``ca``, ``alpn_protocols``, and the server
or client options and hooks of the front doors); they are checked when the site or
connector is made, so a bad one raises there. Server::

    runner = web.AppRunner(app)
    await runner.setup()
    await TLSSite(runner, "0.0.0.0", 8443, key=key_pem, cert=cert_pem).start()

Client::

    async with aiohttp.ClientSession(connector=TLSConnector(ca=ca_pem)) as session:
        async with session.get("https://localhost:8443/") as resp: ...

Both offer ALPN "http/1.1" unless given ``alpn_protocols`` or a ``context``, as
aiohttp's stdlib-ssl client does: aiohttp speaks HTTP/1.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import ssl
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

import aiohttp
from aiohttp import web
from aiohttp.client import ClientTimeout
from aiohttp.client_exceptions import (
    ClientConnectorCertificateError,
    ClientConnectorError,
    ClientConnectorSSLError,
    ServerFingerprintMismatch,
)
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.helpers import ceil_timeout
from aiohttp.web_protocol import RequestHandler
from yarl import URL

from ._aio.server import Server, create_server
from ._aio.starttls import start_tls
from .context import CONTEXT_OPTIONS, SecureContext, create_secure_context
from .errors import TLSCertificateError, TLSError, TLSHandshakeTimeout
from .options import check_names, split

__all__ = ["TLSConnector", "TLSSite", "run_app"]

#: What aiohttp speaks, offered over ALPN unless the caller says otherwise.
_DEFAULT_ALPN = ["http/1.1"]
#: TCPConnector's own keywords (pooling, limits, DNS, ...): everything else is aiotls's.
_CONNECTOR_KEYS = frozenset(inspect.signature(aiohttp.TCPConnector.__init__).parameters) - {"self"}
#: Keywords run_app hands to the AppRunner (and so to each RequestHandler), as web.run_app does.
_RUNNER_KEYS = (
    frozenset(inspect.signature(RequestHandler.__init__).parameters) - {"self", "manager", "loop"}
) | {"shutdown_timeout", "handler_cancellation"}


def _checked(
    door: Callable[..., object],
    context: SecureContext | None,
    options: dict[str, Any],
    *,
    server_side: bool,
) -> tuple[SecureContext, dict[str, Any]]:
    """Check aiotls options now, so a bad one raises at the call that received it.

    Returns the context (built unless given) and the per-connection options left
    to pass along with it (an ALPN select callable stays with them).
    """
    check_names(door, options, server_side=server_side)
    options = dict(options)
    if context is None:
        options.setdefault("alpn_protocols", list(_DEFAULT_ALPN))
    context, _ = split(dict(options), server_side=server_side, context=context)
    rest = {
        name: value
        for name, value in options.items()
        if name not in CONTEXT_OPTIONS or (name == "alpn_protocols" and callable(value))
    }
    return context, rest


class TLSSite(web.BaseSite):
    """A ``web.BaseSite`` serving the runner's app over aiotls, so ``runner.cleanup()``
    drains it like a TCPSite.

    Listens on ``host``/``port`` (default port 8443), a unix socket ``path``, or a
    listening ``sock``. ``context`` and ``**tls_options`` are aiotls server options and
    hooks (``key``, ``cert``, ``sni_callback``, ``on_ocsp_request``, ``on_new_session``,
    ...). ``shutdown_timeout`` among them is aiotls's: how long each connection waits
    for the client's close_notify; the time to drain requests on shutdown is the
    runner's (``web.AppRunner(app, shutdown_timeout=...)``), where aiohttp moved it.
    """

    __slots__ = (
        "_bound_port",
        "_context",
        "_host",
        "_path",
        "_port",
        "_reuse_address",
        "_reuse_port",
        "_sock",
        "_tls_options",
        "_tls_server",
    )

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None = None,
        port: int | None = None,
        *,
        path: str | None = None,
        sock: socket.socket | None = None,
        backlog: int = 128,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        context: SecureContext | None = None,
        **tls_options: Any,
    ) -> None:
        tcp = host is not None or port is not None
        if tcp + (path is not None) + (sock is not None) > 1:
            raise TypeError("TLSSite: give host/port, path or sock, not several")
        super().__init__(runner, backlog=backlog)
        self._context, self._tls_options = _checked(TLSSite, context, tls_options, server_side=True)
        self._host = host
        self._port = 8443 if port is None else port
        self._bound_port: int | None = None
        self._path = path
        self._sock = sock
        self._reuse_address = reuse_address
        self._reuse_port = reuse_port
        self._tls_server: Server | None = None

    @property
    def port(self) -> int:
        """The TCP port: the one bound once started (useful with port 0)."""
        return self._bound_port if self._bound_port is not None else self._port

    @property
    def name(self) -> str:
        if self._path is not None:
            return f"https://unix:{self._path}:"
        if self._sock is not None:
            address = self._sock.getsockname()
            if isinstance(address, str):
                return f"https://unix:{address}:"
            return str(URL.build(scheme="https", host=address[0], port=address[1]))
        return str(URL.build(scheme="https", host=self._host or "0.0.0.0", port=self.port))

    @property
    def tls_server(self) -> Server | None:
        """The aiotls Server once started: add_context, set_ticket_keys, get_connections..."""
        return self._tls_server

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # BaseSite.__init__ refused a runner without one
        where: dict[str, Any]
        if self._path is None and self._sock is None:
            where = {"host": self._host, "port": self._port}
            where |= {"reuse_address": self._reuse_address, "reuse_port": self._reuse_port}
        else:
            where = {"path": self._path, "sock": self._sock}
        tls = await create_server(
            server, context=self._context, backlog=self._backlog, **where, **self._tls_options
        )
        self._tls_server = tls
        # BaseSite.stop() and runner.addresses use only close() and sockets, which an
        # aiotls Server has like asyncio's.
        self._server = cast(asyncio.AbstractServer, tls)
        if tls.sockets and self._path is None:
            name = tls.sockets[0].getsockname()
            if isinstance(name, tuple):
                self._bound_port = name[1]


async def _serve(
    app: web.Application,
    sites: Callable[[web.AppRunner], list[TLSSite]],
    runner_options: dict[str, Any],
    print: Callable[..., None] | None,
) -> None:
    """Start the app on its sites, announce them, and serve until cancelled."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    try:
        for site in sites(runner):
            await site.start()
        if print is not None:
            names = ", ".join(sorted(site.name for site in runner.sites))
            print(f"======== Running on {names} ========\n(Press CTRL+C to quit)")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_app(
    app: web.Application,
    *,
    host: str | list[str] | None = None,
    port: int | None = None,
    path: str | None = None,
    sock: socket.socket | None = None,
    backlog: int = 128,
    reuse_address: bool | None = None,
    reuse_port: bool | None = None,
    handle_signals: bool = True,
    print: Callable[..., None] | None = print,
    loop: asyncio.AbstractEventLoop | None = None,
    context: SecureContext | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` over aiotls until SIGINT/SIGTERM, like ``web.run_app``.

    Sites are made as web.run_app makes them (one per host, the path, the sock).
    Keywords of web.run_app's runner (``shutdown_timeout`` for draining,
    ``keepalive_timeout``, ``access_log``, ...) go to the AppRunner; the rest are
    aiotls server options (see :class:`TLSSite`), checked before the app starts.
    """
    runner_options = {name: options.pop(name) for name in list(options) if name in _RUNNER_KEYS}
    runner_options.setdefault("keepalive_timeout", 75.0)  # web.run_app's default
    runner_options["handle_signals"] = handle_signals
    context, tls_options = _checked(run_app, context, options, server_side=True)
    listen = {"backlog": backlog, "context": context, **tls_options}

    def sites(runner: web.AppRunner) -> list[TLSSite]:
        hosts: list[str | None] = [host] if isinstance(host, str) else list(host or [])
        if not hosts and ((path is None and sock is None) or port is not None):
            hosts = [None]  # all interfaces, as web.run_app does
        made = [
            TLSSite(runner, h, port, reuse_address=reuse_address, reuse_port=reuse_port, **listen)
            for h in hosts
        ]
        if path is not None:
            made.append(TLSSite(runner, path=path, **listen))
        if sock is not None:
            made.append(TLSSite(runner, sock=sock, **listen))
        return made

    with (
        asyncio.Runner(loop_factory=None if loop is None else lambda: loop) as runner,
        contextlib.suppress(web.GracefulExit, KeyboardInterrupt),
    ):
        runner.run(_serve(app, sites, runner_options, print))


class _SessionCache:
    """The latest TLS session per destination; beyond ``size`` the least recently used go."""

    __slots__ = ("_items", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[object, bytes] = OrderedDict()

    def get(self, key: object) -> bytes | None:
        session = self._items.get(key)
        if session is not None:
            self._items.move_to_end(key)
        return session

    def put(self, key: object, session: bytes) -> None:
        if self._size <= 0:
            return
        self._items[key] = session
        self._items.move_to_end(key)
        if len(self._items) > self._size:
            self._items.popitem(last=False)


class TLSConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` whose TLS connections are aiotls clients.

    ``context`` and the aiotls keywords (``ca``, ``key``/``cert`` for client
    certificates, ``alpn_protocols``, ``request_ocsp``/``on_ocsp_response``,
    ``on_keylog``, ``check_server_identity``, ``handshake_timeout``, ...) apply to
    every TLS connection; TCPConnector's own keywords (``limit``, ``limit_per_host``,
    ``keepalive_timeout``, ``resolver``, ...) keep their meaning. Verification follows
    aiotls's rules (the system store, or ``ca=``; Node's host name check); a request
    with ``ssl=False`` or a ``Fingerprint`` skips it, as in aiohttp.

    The latest session per (host, port, server name, context) is kept, at most
    ``session_cache_size`` of them (0: none), and offered by the next connection
    there, so it resumes (``get_extra_info("tls").session_reused``). Proxies work as
    with TCPConnector: HTTPS through a proxy runs aiotls over the CONNECT tunnel.
    """

    def __init__(
        self,
        *,
        context: SecureContext | None = None,
        session_cache_size: int = 256,
        **options: Any,
    ) -> None:
        connector_options = {
            name: options.pop(name) for name in list(options) if name in _CONNECTOR_KEYS
        }
        if isinstance(connector_options.get("ssl"), ssl.SSLContext) or connector_options.get(
            "ssl_context"
        ):
            raise TypeError("TLSConnector: give aiotls options (ca=, key=, ...), not an SSLContext")
        for name in ("servername", "session", "lookup"):
            if name in options:
                raise TypeError(
                    f"{name}: TLSConnector sets it per connection (from the URL, its "
                    "session cache and its resolver=); not a connector option"
                )
        if not isinstance(session_cache_size, int) or isinstance(session_cache_size, bool):
            raise TypeError("session_cache_size: expected an int")
        if session_cache_size < 0:
            raise ValueError("session_cache_size: must be >= 0")
        self._tls_context, self._tls_options = _checked(
            TLSConnector, context, options, server_side=False
        )
        self._on_session: Callable[[bytes], Any] | None = self._tls_options.pop("on_session", None)
        self._unverified: SecureContext | None = None
        self._sessions = _SessionCache(session_cache_size)
        super().__init__(**connector_options)

    def _context_for(self, req: ClientRequest) -> SecureContext:
        """The connector's context, or its unverified twin when the request opts out."""
        if isinstance(req.ssl, ssl.SSLContext):
            raise TypeError("TLSConnector: a request's ssl= may be True, False or a Fingerprint")
        if req.ssl is True and self._ssl is True:
            return self._tls_context
        if self._unverified is None:
            self._unverified = create_secure_context(
                **{**self._tls_context.options, "reject_unauthorized": False}
            )
        return self._unverified

    async def _handshake(
        self,
        raw: asyncio.Transport,
        req: ClientRequest,
        servername: str,
        client_error: type[Exception],
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        """Run aiotls over ``raw`` and hand the result to a fresh ResponseHandler."""
        try:
            context = self._context_for(req)
        except TypeError:
            raw.abort()
            raise
        key = (req.host, req.port, servername, context)
        user_hook = self._on_session

        def remember(session: bytes) -> Any:
            self._sessions.put(key, session)
            return user_hook(session) if user_hook is not None else None

        protocol = self._factory()
        try:
            tls = await start_tls(
                raw,
                protocol=protocol,
                context=context,
                servername=servername,
                session=self._sessions.get(key),
                on_session=remember,
                **self._tls_options,
            )
        except TLSCertificateError as exc:
            raise ClientConnectorCertificateError(req.connection_key, exc) from exc
        except TLSHandshakeTimeout:
            raise  # a TimeoutError: aiohttp reports it as a connection timeout
        except TLSError as exc:
            raise ClientConnectorSSLError(req.connection_key, OSError(None, str(exc))) from exc
        except OSError as exc:
            raise client_error(req.connection_key, exc) from exc
        assert tls is not None  # start_tls returns the transport when given one
        protocol.connection_made(tls)
        return tls, protocol

    async def _wrap_create_connection(
        self,
        *args: Any,
        addr_infos: list[Any],
        req: ClientRequest,
        timeout: ClientTimeout,
        client_error: type[Exception] = ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        """Direct connections: aiohttp's TCP connect (happy eyeballs, local_addr,
        socket_factory), then an aiotls handshake, both within ``sock_connect``."""
        if not kwargs.get("ssl"):
            return await super()._wrap_create_connection(
                *args,
                addr_infos=addr_infos,
                req=req,
                timeout=timeout,
                client_error=client_error,
                **kwargs,
            )
        async with ceil_timeout(timeout.sock_connect, ceil_threshold=timeout.ceil_threshold):
            raw, _ = await super()._wrap_create_connection(
                asyncio.Protocol,
                addr_infos=addr_infos,
                req=req,
                timeout=timeout,
                client_error=client_error,
            )
            return await self._handshake(raw, req, kwargs["server_hostname"], client_error)

    async def _start_tls_connection(
        self,
        underlying_transport: asyncio.Transport,
        req: ClientRequest,
        timeout: ClientTimeout,
        client_error: type[Exception] = ClientConnectorError,
    ) -> tuple[asyncio.BaseTransport, ResponseHandler]:
        """HTTPS through a proxy: aiotls over the CONNECT tunnel (TLS in TLS for an
        HTTPS proxy), then the fingerprint check aiohttp makes here."""
        async with ceil_timeout(timeout.sock_connect, ceil_threshold=timeout.ceil_threshold):
            tls, protocol = await self._handshake(
                underlying_transport, req, req.server_hostname or req.host, client_error
            )
        fingerprint = self._get_fingerprint(req)
        if fingerprint is not None:
            try:
                fingerprint.check(tls)
            except ServerFingerprintMismatch:
                tls.close()
                raise
        return tls, protocol
