"""TLSTransport: an asyncio Transport that runs a TLSEngine over a raw socket transport.

Design
------
Two objects per connection, as in CPython's sslproto and uvloop's: a ``RawProtocol``
(:mod:`aiotls._openssl.speedups`; compiled when the extension is built) is the
BufferedProtocol on the socket transport; in the OPEN states it feeds received chunks to
the connection's DataPath itself, so a record reaches the application without a Python
frame of aiotls's, and forwards every other event here. :class:`TLSTransport` is the
state machine and the Transport the application protocol
(a Protocol or a BufferedProtocol) sees. It is also Node's ``TLSSocket`` surface
(``get_extra_info("tls")`` returns it). The engine (sans-I/O) holds the TLS rules; this
module only moves bytes, runs hooks and keeps asyncio's contracts.

States (``_TRANSITIONS`` lists every allowed move; ``_set_state`` is the only writer)::

    HANDSHAKING <-> WAITING_FOR_HOOK     a hook is awaited; the socket is not read
        |
        v          write_eof()
       OPEN ------------------------> WRITE_CLOSED    ours sent; still reading
        |  |                             |    |
        |  | peer's close_notify,        |    | peer's close_notify,
        |  v eof_received()              |    | eof_received()
        | READ_CLOSED  theirs came;      |    |
        |  |           still writing     |    |
        |  | close(), write_eof(),       |    |
        |  | eof_received() was false    |    |
        v  v                             |    v
       CLOSING <-------- close() --------+  CLOSED
          |  ours sent; waiting for theirs     ^
          +---- theirs came (at once from -----+
                READ_CLOSED), or shutdown_timeout (abort)
    any state -> CLOSED: abort(), a fatal error, the socket lost, a TCP EOF without
    close_notify; before OPEN, a handshake failure (the waiter gets it)

The application protocol gets ``connection_made`` only once the handshake succeeded
and its hooks agreed, then exactly one ``connection_lost``. Sets of states name what
several share: ``_HANDSHAKE_STATES``, ``_OPEN_STATES`` (established, not closing: the
DataPath carries the data both ways that remain) and ``_WRITING_STATES``. Beside the
state, a few facts orthogonal to it stay flags, as in CPython's sslproto: flow control
in each direction (``_reading_paused``, ``_writing_paused``: any state may be paused),
and ``_app_connected`` (connection_made was called, connection_lost not yet), which
outlives CLOSED until the socket's own connection_lost, so folding it in would split
CLOSED in two. One timer per purpose: ``_handshake_timer`` (handshake_timeout, hooks
included), ``_shutdown_timer`` (shutdown_timeout in CLOSING); ``_hook_task`` is the
awaited hook.

Buffers: received bytes land in one per-thread buffer shared by every connection
(``_recv_buffer``) and go straight into the engine's incoming BIO; plaintext waits in
OpenSSL, not here, while reading is paused; ciphertext goes to the socket transport at
once, whose write buffer (and its limits) is the only one on the way out.

Closing follows uvloop's stricter rules: ``close()`` sends what the application wrote,
then close_notify, then waits at most ``shutdown_timeout`` seconds for the peer's
close_notify, discarding any data that arrives meanwhile (then aborts). A TCP EOF
without close_notify is a truncation attack as far as TLS can tell, so it is reported
as ``connection_lost(TLSError("ERR_SSL_UNEXPECTED_EOF_WHILE_READING"))`` unless the
connection was opened with ``suppress_ragged_eofs=True``. ``abort()`` closes at once.

``write_eof()`` sends close_notify and keeps reading (Node's allowHalfOpen). On TLS 1.3
the peer may go on writing until its own close_notify. RFC 5246 (TLS 1.2) asks a peer
that receives close_notify to answer with its own and stop, which OpenSSL-based peers
do at once; data already in flight still arrives.

Errors: a TLS failure after the handshake closes the connection and is the
application's ``connection_lost(exc)``; an application callback that raises (wherever
it was called from) goes through ``_app_failed``: the connection closes, the
application gets ``connection_lost(exc)``, and the failure is logged on ``aiotls``
unless a waiter (create_connection) raises it.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .. import _openssl, certinfo
from .._openssl.speedups import (
    CLOSE_NOTIFY,
    ERROR,
    DataPath,
    RawProtocol,
    error_reasons,
    openssl_functions,
)
from ..clienthello import ALERTS, ClientHelloRefused
from ..context import SecureContext
from ..engine import PauseReason, TLSEngine, require_server_name
from ..errors import TLSError, TLSHandshakeTimeout
from ..options import ConnectionOptions
from .tlssocket import SSLObjectShim, TLSSocket, TLSSocketMixin

if TYPE_CHECKING:
    from .._openssl.speedups import AnyDataPath, AnyRawProtocol

__all__ = ["TLSTransport", "call_hook"]

log = logging.getLogger("aiotls")

_RECV_SIZE = 256 * 1024
#: The longest wait for on_resume_session (and at most half the handshake time left):
#: then the handshake goes on without the store, as a full handshake.
SESSION_STORE_WAIT = 5.0
_local = threading.local()


def _recv_buffer() -> memoryview:
    """One receive buffer per thread, shared by every connection of its loop.

    The socket transport fills it and ``buffer_updated`` copies it into OpenSSL
    at once, so no connection holds receive memory while idle.
    """
    buf = getattr(_local, "recv", None)
    if buf is None:
        buf = _local.recv = memoryview(bytearray(_RECV_SIZE))
    return buf


def call_hook(
    loop: asyncio.AbstractEventLoop, hook: Callable[..., Any], *args: Any
) -> asyncio.Future[Any] | None:
    """Call a plain or async user hook without letting its failure escape unhandled.

    Returns the task running an async hook (None for a plain one), for callers that wait.
    """
    try:
        result = hook(*args)
    except Exception:
        log.exception("aiotls hook %r raised", hook)
        return None
    if not inspect.isawaitable(result):
        return None
    task = asyncio.ensure_future(result, loop=loop)
    task.add_done_callback(_log_hook_failure)
    return task


async def _maybe_await(value: Any) -> Any:
    """The value, or what it resolves to when a hook returned an awaitable."""
    return await value if inspect.isawaitable(value) else value


def _alpn_bytes(choice: object, offered: list[bytes]) -> bytes | None:
    """An ALPN selector's answer as one of the offered protocols, or None (refuse)."""
    raw = choice.encode() if isinstance(choice, str) else choice
    return raw if isinstance(raw, bytes) and raw in offered else None


def _log_hook_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("aiotls hook failed", exc_info=task.exception())


#: Handshake failures that are the server's doing: its hooks, its SNI contexts, its OpenSSL.
_SERVER_FAULTS = frozenset(
    {"ERR_TLS_HOOK", "ERR_TLS_SNI_FROM_SERVER", "ERR_TLS_FEATURE_UNAVAILABLE"}
)


def _log_handshake_failure(exc: BaseException, peer: object) -> None:
    """Log a failed server handshake nobody hooked, split as nginx does: what the client
    caused (junk, timeouts, no shared cipher, resets) at INFO without a traceback, what the
    server caused (a hook, a bad SNI context, a missing feature, a bug) at ERROR with one."""
    if isinstance(exc, TLSError):
        server_fault = exc.code in _SERVER_FAULTS
    else:
        server_fault = not isinstance(exc, OSError)  # a reset is the client's; else a bug
    if isinstance(peer, tuple):
        host = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
        peer = f"{host}:{peer[1]}"
    code = getattr(exc, "code", type(exc).__name__)
    log.log(
        logging.ERROR if server_fault else logging.INFO,
        "TLS handshake with %s failed: %s: %s",
        peer or "an unnamed peer",  # a unix socket client has no name
        code,
        exc,
        exc_info=exc if server_fault else None,
    )


#: Renegotiations a client may start per CLIENT_RENEG_WINDOW seconds (Node's defaults);
#: read and set as ``aiotls.CLIENT_RENEG_LIMIT`` / ``aiotls.CLIENT_RENEG_WINDOW``.
CLIENT_RENEG_LIMIT = 3
CLIENT_RENEG_WINDOW = 600


class _State(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's hash is Python code

    HANDSHAKING = "handshaking"
    WAITING_FOR_HOOK = "waiting for hook"  # the handshake stopped; the socket is not read
    OPEN = "open"
    WRITE_CLOSED = "write closed"  # write_eof() sent our close_notify; still reading
    READ_CLOSED = "read closed"  # the peer's close_notify arrived; we may still write
    CLOSING = "closing"  # close_notify sent; waiting (shutdown_timeout) for the peer's
    CLOSED = "closed"


#: Every transition the transport makes; :meth:`TLSTransport._set_state` refuses others.
_TRANSITIONS: dict[_State, frozenset[_State]] = {
    _State.HANDSHAKING: frozenset({_State.WAITING_FOR_HOOK, _State.OPEN, _State.CLOSED}),
    _State.WAITING_FOR_HOOK: frozenset({_State.HANDSHAKING, _State.CLOSED}),
    _State.OPEN: frozenset(
        {_State.WRITE_CLOSED, _State.READ_CLOSED, _State.CLOSING, _State.CLOSED}
    ),
    _State.WRITE_CLOSED: frozenset({_State.CLOSING, _State.CLOSED}),
    _State.READ_CLOSED: frozenset({_State.CLOSING, _State.CLOSED}),
    _State.CLOSING: frozenset({_State.CLOSED}),
    _State.CLOSED: frozenset({_State.CLOSED}),  # closing twice is harmless
}

#: The states before the connection is established (a failure then is a handshake failure).
_HANDSHAKE_STATES = frozenset({_State.HANDSHAKING, _State.WAITING_FOR_HOOK})
#: Established and not closing: the application is live, the DataPath carries the data.
_OPEN_STATES = frozenset({_State.OPEN, _State.WRITE_CLOSED, _State.READ_CLOSED})
#: The states in which the application may write (our close_notify not sent).
_WRITING_STATES = frozenset({_State.OPEN, _State.READ_CLOSED})


class TLSTransport(TLSSocketMixin, asyncio.Transport):
    """The application's side of a TLS connection, with Node's TLSSocket getters."""

    __slots__ = (
        "_app",
        "_app_buffered",
        "_app_connected",
        "_app_views",
        "_close_exc",
        "_connect_app",
        "_datapath",
        "_engine",
        "_handshake_timer",
        "_hello_context",
        "_hook_task",
        "_loop",
        "_on_lost",
        "_options",
        "_raw",
        "_reading_paused",
        "_reneg_waiter",
        "_renegotiations",
        "_session_hooks",
        "_shutdown_timer",
        "_state",
        "_waiter",
        "_writing_paused",
        "raw_protocol",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app_protocol: asyncio.BaseProtocol,
        context: SecureContext,
        options: ConnectionOptions,
        *,
        waiter: asyncio.Future[None] | None = None,
        on_lost: Callable[[TLSTransport], None] | None = None,
        connect_app: bool = True,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._options = options
        self._state = _State.HANDSHAKING
        if not options.server_side:  # before anything happens, naming the front door's option
            require_server_name(
                context, options.servername, options.check_server_identity, "servername"
            )
        self._raw: asyncio.Transport | None = None
        self._waiter = waiter
        self._on_lost = on_lost
        self._connect_app = connect_app
        # An ALPN selector is awaited at the ClientHello pause; without the ClientHello
        # callback (no extended access) OpenSSL's ALPN callback calls it (plain ones only).
        alpn_pause = options.alpn_callback is not None and _openssl.has("client_hello_cb")
        self._engine = TLSEngine(
            context,
            server_side=options.server_side,
            server_hostname=options.servername,
            pause_handshake=options.sni_callback is not None or options.on_ocsp_request is not None,
            allow_renegotiation=options.allow_renegotiation,
            external_sessions=options.on_resume_session is not None,
            choose_alpn=alpn_pause,
            inspect_client_hello=options.on_client_hello is not None,
            request_ocsp=options.request_ocsp,
            on_new_session=self._new_session if options.on_new_session is not None else None,
            on_session=self._hook_caller(options.on_session),
            session=options.session,
            on_keylog=self._keylog if options.on_keylog is not None else None,
            check_server_identity=options.check_server_identity,
            min_dh_size=options.min_dh_size,
            alpn_select=(
                self._alpn_select if options.alpn_callback is not None and not alpn_pause else None
            ),
            on_renegotiation=self._count_renegotiation if options.allow_renegotiation else None,
        )
        self._renegotiations: list[float] | None = None  # times of client renegotiations
        self._reneg_waiter: asyncio.Future[None] | None = None
        self._app: asyncio.BaseProtocol = app_protocol
        self._app_buffered = isinstance(app_protocol, asyncio.BufferedProtocol)
        self._app_views = getattr(app_protocol, "accepts_transient_views", False)
        self._app_connected = False
        self._reading_paused = False
        self._writing_paused = False
        self._close_exc: BaseException | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None  # handshake_timeout
        self._shutdown_timer: asyncio.TimerHandle | None = None  # shutdown_timeout
        self._hook_task: asyncio.Task[None] | None = None
        self._hello_context = False  # on_client_hello chose the context: no sni_callback
        self._session_hooks: list[asyncio.Future[Any]] = []  # async on_new_session running
        self._datapath: AnyDataPath | None = None  # the OPEN state's data (not renegotiating)
        #: The socket transport's protocol: it feeds the DataPath itself in the OPEN states.
        self.raw_protocol: AnyRawProtocol = RawProtocol(self, _recv_buffer())

    # -- events from the socket ------------------------------------------------------

    def _raw_connection_made(self, raw: asyncio.Transport) -> None:
        self._raw = raw
        timeout = self._options.handshake_timeout
        if timeout:
            self._handshake_timer = self._loop.call_later(
                timeout, self._handshake_timed_out, timeout
            )
        if not self._options.server_side:
            self._flush()  # the ClientHello the engine made when it was created

    def _raw_received(self, data: memoryview | bytes) -> None:
        engine = self._engine
        if self._state is _State.HANDSHAKING:
            self._step_handshake(engine.receive_data, data)
            return
        if self._state is _State.WAITING_FOR_HOOK:
            # Only from a transport that does not pause at once: kept for after the hook,
            # within the engine's bound on what may wait before the handshake completes.
            try:
                engine.receive_data(data)
            except TLSError as exc:
                self._handshake_failed(exc)
            return
        if self._state is _State.CLOSED:
            return
        try:  # no DataPath: CLOSING (decrypt and discard) or a renegotiation under way
            engine.receive_data(data)
        except TLSError as exc:
            self._fatal(exc)
            return
        self._deliver()

    def _raw_eof(self) -> bool:
        """TCP EOF: clean only after the peer's close_notify (or with ragged EOFs allowed)."""
        if self._state in _HANDSHAKE_STATES:
            self._handshake_failed(
                TLSError(
                    "connection closed during the TLS handshake",
                    code="ERR_SSL_UNEXPECTED_EOF_WHILE_READING",
                )
            )
            return False
        if self._state not in _OPEN_STATES:
            return False
        if not self._engine.close_notify_received:
            if not self._options.suppress_ragged_eofs:
                self._close_exc = TLSError(
                    "TCP EOF without TLS close_notify (truncated connection)",
                    code="ERR_SSL_UNEXPECTED_EOF_WHILE_READING",
                )
                self._set_state(_State.CLOSED)
                return False
            self._on_peer_close_notify()
        # The peer is done writing; keep the socket only if we may still write.
        return self._state in _WRITING_STATES

    def _raw_connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._hook_task is not None:
            self._hook_task.cancel()
        if self._state in _HANDSHAKE_STATES:
            self._handshake_failed(
                exc
                or TLSError(
                    "connection lost during the TLS handshake",
                    code="ERR_SSL_UNEXPECTED_EOF_WHILE_READING",
                )
            )
        self._set_state(_State.CLOSED)
        self._engine.release()
        if self._on_lost is not None:
            self._on_lost(self)
        if self._app_connected:
            self._app_connected = False
            err = self._close_exc if self._close_exc is not None else exc
            self._loop.call_soon(self._app.connection_lost, err)  # type: ignore[arg-type]

    def _raw_pause_writing(self) -> None:
        self._writing_paused = True
        if self._app_connected:
            self._app.pause_writing()

    def _raw_resume_writing(self) -> None:
        self._writing_paused = False
        if self._app_connected:
            self._app.resume_writing()

    # -- handshake -------------------------------------------------------------------

    def _step_handshake(self, step: Callable[..., Any], *args: Any) -> None:
        """Run one handshake step, flush what it produced, then act on the outcome."""
        engine = self._engine
        try:
            step(*args)
        except TLSError as exc:
            self._flush()  # the fatal alert OpenSSL produced goes out first
            self._handshake_failed(exc)
            return
        status = engine.status  # where the step left the handshake, as one value
        if status.handshake_complete:
            # The last flight (a client's Finished, a server's tickets) waits until the
            # end of this loop iteration, so that the application's first write, if
            # any, leaves in the same segment: one socket write fewer per connection.
            self._handshake_done()  # the application's first step is scheduled first
            self._loop.call_soon(self._settle)
            return
        self._flush()
        if status.paused is not None:
            self._wait_for_hook(self._run_hooks(status.paused))

    def _wait_for_hook(self, hook: Coroutine[Any, Any, None]) -> None:
        """Stop the handshake and the socket's reading while ``hook`` runs as a task; it
        ends with :meth:`_hook_returned` (or a handshake failure)."""
        assert self._raw is not None
        self._set_state(_State.WAITING_FOR_HOOK)
        self._raw.pause_reading()
        self._hook_task = self._loop.create_task(hook)

    def _hook_returned(self) -> bool:
        """Back to HANDSHAKING, reading again; False if the connection ended meanwhile."""
        self._hook_task = None
        if self._state is not _State.WAITING_FOR_HOOK:
            return False
        assert self._raw is not None
        self._set_state(_State.HANDSHAKING)
        self._raw.resume_reading()
        return True

    def _hook_caller(self, hook: Callable[..., Any] | None) -> Callable[..., object] | None:
        """Wrap a user hook that OpenSSL's callbacks fire: plain or async, never raising."""
        if hook is None:
            return None
        return lambda *args: call_hook(self._loop, hook, *args)

    async def _run_hooks(self, reason: PauseReason) -> None:
        """Await the server's handshake hooks while the handshake is paused.

        At the ClientHello: on_client_hello first (a pause of its own), then
        on_resume_session (external session store) and an ALPN selector. After it, at
        certificate selection: sni_callback, then on_ocsp_request.
        """
        engine = self._engine
        try:
            if engine.client_hello_pending:
                await self._inspect_client_hello()
            elif reason is PauseReason.CLIENT_HELLO:
                await self._ask_session_store()
                await self._choose_alpn()
            elif reason is PauseReason.SERVER_IDENTITY:
                await self._check_server_identity()
            else:
                await self._choose_context()
                await self._staple_ocsp()
        except TLSError as exc:
            self._handshake_failed(exc)
            return
        if self._hook_returned():
            self._step_handshake(engine.resume)

    async def _check_server_identity(self) -> None:
        """Await an async check_server_identity; the engine judges what it gave."""
        check = self._engine.identity_check
        assert check is not None
        try:
            outcome = await check
        except Exception as exc:  # a user's check may raise anything: the engine refuses
            outcome = exc
        self._engine.finish_identity_check(outcome)

    async def _ask_session_store(self) -> None:
        """Look the offered session id up with on_resume_session.

        A store that raises, or does not answer within :data:`SESSION_STORE_WAIT`
        seconds and half the handshake time left, means a full handshake and a
        warning: a session store outage must not take TLS down.
        """
        engine, hook = self._engine, self._options.on_resume_session
        if engine.resume_session_id is None:
            return
        assert hook is not None
        timer = self._handshake_timer
        left = timer.when() - self._loop.time() if timer is not None else math.inf
        wait = min(SESSION_STORE_WAIT, left / 2)
        try:
            async with asyncio.timeout(wait):
                data = await _maybe_await(hook(engine.resume_session_id))
        except TimeoutError:
            log.warning("on_resume_session gave no answer within %.3g s: full handshake", wait)
            data = None
        except Exception:
            log.warning("on_resume_session failed: full handshake", exc_info=True)
            data = None
        # Anything but bytes (None, junk) means a full handshake, never a crash.
        engine.set_resume_data(bytes(data) if isinstance(data, bytes | bytearray) else None)

    async def _choose_alpn(self) -> None:
        """Await the ALPN selector on the client's list; a failure refuses the handshake
        with the no_application_protocol alert (and is logged)."""
        engine = self._engine
        if engine.alpn_offered is None:
            return
        try:
            choice = await _maybe_await(self._ask_alpn_selector(engine.alpn_offered))
        except Exception:
            log.error("alpn_protocols selector failed: no_application_protocol", exc_info=True)
            choice = None
        engine.set_alpn_choice(_alpn_bytes(choice, engine.alpn_offered))

    def _ask_alpn_selector(self, offered: list[bytes]) -> Any:
        """The selector's answer (or awaitable) for the client's list and our SNI."""
        callback = self._options.alpn_callback
        assert callback is not None
        return callback([p.decode("ascii", "replace") for p in offered], self.servername)

    async def _inspect_client_hello(self) -> None:
        """Await on_client_hello on the parsed ClientHello: go on, serve the context it
        gave (as SNI would), or have the engine end the handshake with the refusal's
        alert; a hook that fails otherwise ends it with internal_error (a server fault)."""
        engine, hook = self._engine, self._options.on_client_hello
        assert hook is not None
        try:
            answer = await _maybe_await(hook(engine.hello))
            if not isinstance(answer, SecureContext | ClientHelloRefused | None):
                raise TypeError(f"on_client_hello returned {type(answer).__name__}")
        except ClientHelloRefused as exc:
            answer = exc
        except Exception as exc:
            error = TLSError(f"on_client_hello failed: {exc!r}", code="ERR_TLS_HOOK")
            error.__cause__ = exc
            engine.refuse_client_hello(ALERTS["internal_error"], error)
            return
        if isinstance(answer, ClientHelloRefused):
            refusal = TLSError(str(answer), code="ERR_TLS_CLIENT_HELLO_REFUSED")
            refusal.__cause__ = answer
            engine.refuse_client_hello(answer.alert, refusal)
        elif answer is not None:
            engine.set_context(answer)
            self._hello_context = True

    async def _choose_context(self) -> None:
        engine, sni = self._engine, self._options.sni_callback
        if sni is None or self._hello_context:
            return
        try:
            ctx = await _maybe_await(sni(engine.servername))
            if ctx is not None and not isinstance(ctx, SecureContext):
                raise TypeError(f"sni_callback returned {type(ctx).__name__}")
        except Exception as exc:
            raise TLSError(f"Invalid SNI context: {exc}", code="ERR_TLS_SNI_FROM_SERVER") from exc
        if ctx is not None:
            engine.set_context(ctx)

    async def _staple_ocsp(self) -> None:
        engine, hook = self._engine, self._options.on_ocsp_request
        if hook is None or not engine.status_requested:
            return
        cert = engine.get_x509_certificate()
        ctx = engine.context
        issuer = next(
            (c for c in ctx.certificates + ctx.ca_certs if cert and c.subject == cert.issuer),
            None,
        )
        try:
            response = await _maybe_await(hook(cert, issuer))
            if response is not None and not isinstance(response, bytes | bytearray):
                raise TypeError(f"on_ocsp_request returned {type(response).__name__}")
        except Exception as exc:
            raise TLSError(f"on_ocsp_request failed: {exc!r}", code="ERR_TLS_HOOK") from exc
        engine.ocsp_response = bytes(response) if response else None

    def _count_renegotiation(self) -> TLSError | None:
        """Node's limit: CLIENT_RENEG_LIMIT per CLIENT_RENEG_WINDOW s, read at each attempt
        (set as ``aiotls.CLIENT_RENEG_LIMIT``, which forwards here, as in Node)."""
        now = time.monotonic()
        window = CLIENT_RENEG_WINDOW
        recent = [t for t in self._renegotiations or () if now - t < window]
        self._renegotiations = [*recent, now]
        if len(self._renegotiations) > CLIENT_RENEG_LIMIT:
            return TLSError(
                "TLS session renegotiation attack detected", code="ERR_TLS_SESSION_ATTACK"
            )
        return None

    def _keylog(self, line: bytes) -> None:
        assert self._options.on_keylog is not None
        call_hook(self._loop, self._options.on_keylog, line)

    def _alpn_select(self, offered: list[bytes]) -> bytes | None:
        """OpenSSL's ALPN callback asks a plain selector (no ClientHello pause here)."""
        try:
            choice = self._ask_alpn_selector(offered)
            if inspect.isawaitable(choice):
                getattr(choice, "close", lambda: None)()  # never awaited: no warning either
                raise TypeError("an async selector needs extended OpenSSL access")
        except Exception:
            log.error("alpn_protocols selector failed: no_application_protocol", exc_info=True)
            return None
        return _alpn_bytes(choice, offered)

    def _handshake_timed_out(self, timeout: float) -> None:
        self._handshake_timer = None
        if self._state in _HANDSHAKE_STATES:
            self._handshake_failed(TLSHandshakeTimeout(timeout))

    def _handshake_done(self) -> None:
        hook = self._options.on_ocsp_response
        if self._options.request_ocsp and hook is not None:
            # Called once, before the connection is reported established; it may be async.
            self._wait_for_hook(self._report_ocsp(hook))
        elif self._session_hooks:
            self._wait_for_hook(self._hold_for_sessions())
        else:
            self._establish()

    async def _report_ocsp(self, hook: Callable[..., Any]) -> None:
        try:
            await _maybe_await(hook(self._engine.ocsp_response))
        except Exception as exc:
            self._handshake_failed(
                TLSError(f"on_ocsp_response failed: {exc!r}", code="ERR_TLS_HOOK")
            )
            return
        self._open_after_hook()

    def _new_session(self, session_id: bytes, session_data: bytes) -> None:
        """on_new_session, once per session OpenSSL creates; an async one, during the
        handshake, holds the connection until it completes (see _hold_for_sessions)."""
        assert self._options.on_new_session is not None
        task = call_hook(self._loop, self._options.on_new_session, session_id, session_data)
        if task is not None and self._state is _State.HANDSHAKING:
            self._session_hooks.append(task)

    async def _hold_for_sessions(self) -> None:
        """Node's newSession: the server's last flight (TLS 1.2) or first data (TLS 1.3)
        waits until the async on_new_session calls completed, so a client that reconnects
        at once finds its session stored. Their failures are logged, not fatal."""
        await asyncio.wait(self._session_hooks)
        self._session_hooks.clear()
        self._open_after_hook()

    def _open_after_hook(self) -> None:
        """A completed handshake's hook returned: open the connection, send what waited."""
        if self._hook_returned():
            self._establish()
            self._settle()

    def _establish(self) -> None:
        """The handshake succeeded and the hooks agreed: hand over to the application."""
        self._cancel_timers()
        self._set_state(_State.OPEN)
        self._open_data_path()
        self._app_connected = True
        if self._connect_app:
            try:
                self._app.connection_made(self)
            except Exception as exc:
                self._app_failed("connection_made()", exc)
                return
        if self._writing_paused:
            self._app.pause_writing()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self._options.on_secure_connection is not None:
            call_hook(self._loop, self._options.on_secure_connection, self)
        # What arrived with the last flight; the flight waits for _settle, so that the
        # application's first write leaves with it.
        self._deliver(flush=False)

    def _app_failed(self, where: str, exc: Exception) -> None:
        """The one path for an application protocol callback that raised (wherever it was
        called from, a socket event or a call_soon): close the connection (it gets
        connection_lost(exc)), raising the error from create_connection, or logging it
        when nobody awaits one."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        else:
            log.error("%s of %r failed; connection closed", where, self._app, exc_info=exc)
        self._fatal(exc)

    def _handshake_failed(self, exc: BaseException) -> None:
        if self._state not in _HANDSHAKE_STATES:
            return
        self._set_state(_State.CLOSED)
        self._cancel_timers()
        if self._raw is not None:
            self._raw.close()  # flushes the alert already written, then closes
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self._options.on_tls_client_error is not None:
            call_hook(self._loop, self._options.on_tls_client_error, exc, self)
        elif self._options.server_side:
            _log_handshake_failure(exc, self.get_extra_info("peername"))

    # -- data path -------------------------------------------------------------------

    def _settle(self) -> None:
        """After the handshake: send its last flight (with the application's first write,
        if any, in one socket write), then give back the memory it left in the BIOs."""
        if self._session_hooks:
            return  # the last flight is held until on_new_session completed
        self._flush()
        datapath = self._datapath
        if self._engine.bloated and datapath is not None and self._state in _OPEN_STATES:
            self._engine.compact()
            datapath.rebind(*self._engine.raw_addresses())

    def _open_data_path(self) -> None:
        """(Re)build the DataPath that carries the OPEN state's data, on the engine's
        current SSL* and BIOs: after the handshake, a compaction, a renegotiation. Not
        while a renegotiation runs: the engine's path sees it through."""
        assert self._raw is not None
        if self._reneg_waiter is not None:
            return
        datapath = DataPath(
            *self._engine.raw_addresses(),
            openssl_functions(),
            self._app,
            self._raw.write,
            self._engine,
        )
        datapath.paused = self._reading_paused
        self._bind_data_path(datapath)

    def _bind_data_path(self, datapath: AnyDataPath | None) -> None:
        """The DataPath received chunks go to (the raw protocol feeds it), or None: the
        engine's path."""
        self._datapath = self.raw_protocol.datapath = datapath

    def _data_path_raised(self, exc: Exception) -> None:
        """The application's protocol raised inside a DataPath delivery."""
        self._app_failed("buffer_updated()" if self._app_buffered else "data_received()", exc)

    def _data_path_ended(self, datapath: AnyDataPath, flags: int) -> None:
        """A DataPath reported a fatal error or the peer's close_notify."""
        if flags & ERROR:
            self._data_path_failed(datapath)
        elif flags & CLOSE_NOTIFY:  # reported again by every later feed: acted on once
            self._engine.close_notify_received = True
            self._on_peer_close_notify()

    def _data_path_failed(self, datapath: AnyDataPath) -> None:
        """Close on the fatal error a DataPath reported, as the engine would have raised it."""
        assert datapath.error is not None
        err, codes = datapath.error
        self._fatal(self._engine.data_path_error(err, error_reasons(codes)))

    def _flush(self) -> None:
        out = self._engine.take_output()
        if out is not None and self._raw is not None and not self._raw.is_closing():
            self._raw.write(out)

    def _deliver(self, flush: bool = True) -> None:
        """Decrypt what has arrived and hand it to the application (unless paused);
        ``flush=False`` leaves what the application wrote meanwhile in the BIO."""
        if self._reading_paused and self._state in _OPEN_STATES:
            return
        if flush and self._datapath is not None:  # it always flushes
            self.raw_protocol.data_received(b"")  # through the DataPath, as a chunk would
            return
        engine, app = self._engine, self._app
        try:
            while True:
                if self._state not in _OPEN_STATES:  # after close(): decrypt and discard
                    if not engine.read():
                        break
                elif self._app_buffered:
                    try:  # asyncio's contract: an empty buffer is an error, as is raising
                        buf = app.get_buffer(-1)  # type: ignore[attr-defined]
                        if not len(buf):
                            raise RuntimeError("get_buffer() returned an empty buffer")
                    except Exception as exc:
                        self._app_failed("get_buffer()", exc)
                        return
                    n = engine.read_into(buf, len(buf))
                    if not n:
                        break
                    try:
                        app.buffer_updated(n)  # type: ignore[attr-defined]
                    except Exception as exc:
                        self._app_failed("buffer_updated()", exc)
                        return
                else:
                    # A StreamReader copies what it is given at once: hand it a view.
                    data = engine.read_view() if self._app_views else engine.read()
                    if not data:
                        break
                    try:
                        app.data_received(data)  # type: ignore[attr-defined]
                    except Exception as exc:
                        self._app_failed("data_received()", exc)
                        return
                if self._reading_paused:
                    break
        except TLSError as exc:
            self._fatal(exc)
            return
        if flush:
            self._flush()  # post-handshake messages (key updates, renegotiation)
        if self._reneg_waiter is not None and not engine.renegotiating:
            self._renegotiated()
        if engine.close_notify_received:
            self._on_peer_close_notify()

    def _on_peer_close_notify(self) -> None:
        """The peer's close_notify (or a TCP EOF taken as one): acted on once, in the state
        it finds; later reports (READ_CLOSED, CLOSED) change nothing.

        OPEN -> READ_CLOSED, then eof_received(): a true answer keeps us writing, else we
        close. WRITE_CLOSED: eof_received(), then CLOSED (both sides sent close_notify).
        CLOSING: the close_notify close() waited for, so CLOSED.
        """
        state = self._state
        if state is _State.CLOSING:
            self._close_raw()
            return
        if state is _State.OPEN:
            self._set_state(_State.READ_CLOSED)
        elif state is not _State.WRITE_CLOSED:
            return
        try:
            keep_open = self._app.eof_received() if self._app_connected else False  # type: ignore[attr-defined]
        except Exception as exc:
            self._app_failed("eof_received()", exc)
            return
        if state is _State.OPEN:
            if not keep_open:
                self.close()
        elif self._state is _State.WRITE_CLOSED:  # unless eof_received() closed it
            self._close_raw()

    def _renegotiated(self) -> None:
        waiter, self._reneg_waiter = self._reneg_waiter, None  # a refusal went to _fatal
        if self._state in _OPEN_STATES:
            self._open_data_path()
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fatal(self, exc: BaseException) -> None:
        if self._reneg_waiter is not None and not self._reneg_waiter.done():
            self._reneg_waiter.set_exception(exc)
            self._reneg_waiter = None
        if self._state is _State.CLOSED:
            return
        if self._state in _OPEN_STATES:
            self._close_exc = exc
        self._set_state(_State.CLOSED)
        self._cancel_timers()
        self._flush()
        if self._raw is not None:
            self._raw.close()

    def _close_raw(self) -> None:
        self._set_state(_State.CLOSED)
        self._cancel_timers()
        if self._raw is not None:
            self._raw.close()

    def _shutdown_timed_out(self) -> None:
        self._shutdown_timer = None
        if self._raw is not None and self._state is _State.CLOSING:
            self._set_state(_State.CLOSED)
            self._raw.abort()

    def _set_state(self, state: _State) -> None:
        """The one place the state changes; a transition not in the table is a bug."""
        if state not in _TRANSITIONS[self._state]:
            raise RuntimeError(f"aiotls: TLS transport cannot go from {self._state} to {state}")
        self._state = state
        if self._datapath is not None and state not in _OPEN_STATES:
            self._datapath.paused = True  # a delivery under way stops after its batch
            self._bind_data_path(None)  # data after OPEN is the engine's (decrypt, discard)

    def _cancel_timers(self) -> None:
        """Stop the handshake and shutdown timers (whichever runs)."""
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
            self._shutdown_timer = None

    # -- asyncio.Transport -----------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data``; RuntimeError after write_eof() (WRITE_CLOSED), as
        asyncio's transports; ignored once the transport is closing."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data: expected a bytes-like object, got {type(data).__name__}")
        if self._state not in _WRITING_STATES:
            if self._state is _State.WRITE_CLOSED:
                raise RuntimeError("Cannot call write() after write_eof()")
            return
        if not data:
            return
        if self._datapath is not None:
            if self._datapath.write(data):
                self._data_path_failed(self._datapath)
            return
        try:
            self._engine.send(data)
        except TLSError as exc:
            self._fatal(exc)
            return
        self._flush()

    def writelines(self, list_of_data: Any) -> None:
        """Write several buffers with one flush to the socket."""
        if self._state not in _WRITING_STATES:
            for data in list_of_data:
                self.write(data)
            return
        if self._datapath is not None:  # one SSL_write, one flush
            joined = b"".join(list_of_data)
            if joined and self._datapath.write(joined):
                self._data_path_failed(self._datapath)
            return
        try:
            for data in list_of_data:
                if data:
                    self._engine.send(data)
        except TLSError as exc:
            self._fatal(exc)
            return
        self._flush()

    def write_eof(self) -> None:
        """Send close_notify and keep reading (half-close): OPEN -> WRITE_CLOSED. After the
        peer's close_notify (READ_CLOSED) both sides are done: that is close()."""
        if self._state is _State.READ_CLOSED:
            self.close()
            return
        if self._state is not _State.OPEN:
            return
        self._set_state(_State.WRITE_CLOSED)
        self._engine.close()
        self._flush()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        """Send pending data and close_notify, then wait for the peer's (shutdown_timeout)."""
        if self._state in _HANDSHAKE_STATES:
            self._handshake_failed(TLSError("closed during handshake", code="ERR_TLS_CLOSED"))
            return
        if self._state not in _OPEN_STATES:
            return
        peer_closed = self._state is _State.READ_CLOSED  # nothing to wait for
        self._set_state(_State.CLOSING)
        self._engine.close()
        self._flush()
        timeout = self._options.shutdown_timeout
        if peer_closed or not timeout or self._raw is None:
            self._close_raw()
            return
        self._shutdown_timer = self._loop.call_later(timeout, self._shutdown_timed_out)
        if self._reading_paused:
            self._raw.resume_reading()
        self._deliver()  # close_notify may already be waiting in OpenSSL

    def is_closing(self) -> bool:
        return self._state in (_State.CLOSING, _State.CLOSED)

    def abort(self) -> None:
        """Close at once; unsent data is lost."""
        if self._state in _HANDSHAKE_STATES:
            self._handshake_failed(TLSError("aborted during handshake", code="ERR_TLS_CLOSED"))
        self._set_state(_State.CLOSED)
        self._cancel_timers()
        if self._raw is not None:
            self._raw.abort()

    def pause_reading(self) -> None:
        if self._reading_paused:
            return
        self._reading_paused = True
        if self._datapath is not None:
            self._datapath.paused = True
        if self._raw is not None and self._state in _OPEN_STATES:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        if self._datapath is not None:
            self._datapath.paused = False
        if self._raw is not None and self._state in _OPEN_STATES:
            self._raw.resume_reading()
            self._loop.call_soon(self._deliver)

    def is_reading(self) -> bool:
        return not self._reading_paused and self._state in _OPEN_STATES

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Limits on the socket's backlog (aiotls itself buffers no plaintext)."""
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size() if self._raw is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        if self._raw is None:
            return (0, 0)
        return self._raw.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._app = protocol
        self._app_buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._app_views = getattr(protocol, "accepts_transient_views", False)
        if self._datapath is not None:
            self._datapath.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._app

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's keys (peercert, cipher, sslcontext, ssl_object, ...) plus "tls"."""
        if name == "tls":
            return TLSSocket(self)
        if name == "sslcontext":
            return self._engine.context
        if name == "ssl_object":
            return SSLObjectShim(self)
        if name == "peercert":
            cert = (
                self._engine.get_peer_x509_certificate()
                if self._state is not _State.CLOSED
                else None
            )
            return certinfo.stdlib_peercert(cert) if cert is not None else default
        if name == "cipher":
            cipher = self._engine.stdlib_cipher()
            return default if cipher is None else cipher
        if name == "compression":
            return None
        if name == "client_hello":  # with on_client_hello: the parsed ClientHello
            return self._engine.hello or default
        if self._raw is not None:
            return self._raw.get_extra_info(name, default)
        return default

    @property
    def authorized(self) -> bool:
        """Node's authorized: the peer's certificate (and a server's identity) verified."""
        return self._engine.authorized

    @property
    def authorization_error(self) -> str | None:
        """Node's authorizationError: the code saying why the peer is not authorized."""
        return self._engine.authorization_error

    def _is_closed(self) -> bool:
        return self._state is _State.CLOSED

    def _is_server(self) -> bool:
        return self._options.server_side

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._state in _OPEN_STATES:  # the socket transport warns and closes itself
            _warn(f"unclosed TLS transport {self!r}", ResourceWarning, source=self)

    def __repr__(self) -> str:
        side = "server" if self._options.server_side else "client"
        return f"<TLSTransport {side} {self._state.value}>"

    # -- renegotiation (drives the state machine) -----------------------------------

    async def renegotiate(
        self, *, request_cert: bool = False, reject_unauthorized: bool = True
    ) -> None:
        """Renegotiate (TLS 1.2, either side) or, on a TLS 1.3 server with
        ``request_cert=True``, request the client's certificate (post-handshake auth).

        Returns once done; :attr:`authorized` then reflects any new client
        certificate. Raises TLSError when it cannot be done (TLS 1.3 without
        post-handshake auth, renegotiation refused by the peer, a refused certificate).
        """
        if self._state is not _State.OPEN or self._reneg_waiter is not None:
            raise TLSError("renegotiate: connection not open or busy", code="ERR_TLS_NOT_READY")
        self._engine.renegotiate(request_cert=request_cert, reject_unauthorized=reject_unauthorized)
        self._bind_data_path(None)  # the engine judges the peer again: its path until done
        self._reneg_waiter = self._loop.create_future()
        waiter = self._reneg_waiter
        self._flush()
        timeout = self._options.handshake_timeout or None
        await asyncio.wait_for(asyncio.shield(waiter), timeout)

    def disable_renegotiation(self) -> None:
        """Refuse any further renegotiation (Node's disableRenegotiation)."""
        self._engine.disable_renegotiation()
