"""Connection options: split the front doors' keywords into a context and per-connection settings.

Context options build a :class:`~aiotls.SecureContext` when ``context=`` is not
given (when it is, the context wins, as in Node). The rest (timeouts and hooks)
become a :class:`ConnectionOptions`, checked here so that a bad value raises at
the call that received it, naming the option.

The TypedDicts here (with :class:`~aiotls.context.ContextOptions`) are the table of
every option: mypy checks the front doors' keywords against them, the names they
declare are the names the front doors accept, and each option's ``Opt`` gives its
default and names its checker, which :func:`~aiotls.context.validated` runs (for context
options in create_secure_context, for the rest in :func:`split`).
"""

import inspect
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    ParamSpec,
    Protocol,
    TypedDict,
    TypeVar,
)

from cryptography import x509

from . import _checks
from .clienthello import ClientHello, ClientHelloRefused
from .context import (
    CONTEXT_OPTIONS,
    ContextOptions,
    Opt,
    SecureContext,
    _ContextOptionsBase,
    create_secure_context,
    option_names,
    option_specs,
    unknown_options,
    validated,
)
from .stapling import MustStaple, OCSPStapler

if TYPE_CHECKING:
    from ._aio.transport import TLSTransport  # noqa: F401 (quoted in the hook aliases)

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "ALPNSelector",
    "AddrInfo",
    "CheckServerIdentity",
    "ClientErrorHook",
    "ClientOptions",
    "ConnectionOptions",
    "Hook",
    "KeylogHook",
    "Lookup",
    "NewSessionHook",
    "OCSPRequestHook",
    "OCSPResponseHook",
    "ResumeSessionHook",
    "SNICallback",
    "SecureConnectionHook",
    "ServerOptions",
    "SessionHook",
    "check_names",
    "split",
]

#: asyncio's value (Node's is 120 s): long enough for slow links, short enough to reap stalls.
DEFAULT_HANDSHAKE_TIMEOUT = 60.0
#: How long close() waits for the peer's close_notify before dropping the connection.
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: A hook: a plain function returning R, or a coroutine function (an awaitable of R is
#: awaited). Hooks that answer the handshake (SNI, OCSP, session store) pause it meanwhile.
Hook = Callable[_P, _R | Awaitable[_R]]
#: sni_callback(servername): the context for this ClientHello's server name; None keeps
#: the default.
SNICallback = Hook[[str | None], SecureContext | None]
#: alpn_protocols as a callable (client_protocols, servername): the protocol to speak, or
#: None to end the handshake with the no_application_protocol alert.
ALPNSelector = Hook[[list[str], str | None], str | None]
#: on_client_hello(hello): None goes on; a SecureContext serves this connection (then
#: sni_callback is not asked); a ClientHelloRefused (returned or raised) ends the handshake.
ClientHelloHook = Hook[[ClientHello], SecureContext | ClientHelloRefused | None]
#: on_ocsp_request(certificate, issuer): the OCSP response to staple, or None.
OCSPRequestHook = Hook[[x509.Certificate, x509.Certificate | None], bytes | None]
#: on_new_session(session_id, session_data): store a new server session.
NewSessionHook = Hook[[bytes, bytes], object]
#: on_resume_session(session_id): the session_data stored for that id, or None.
ResumeSessionHook = Hook[[bytes], bytes | None]
#: on_secure_connection(transport): a server connection completed its handshake.
SecureConnectionHook = Hook[["TLSTransport"], object]
#: on_tls_client_error(exc, transport): a server connection failed before it was secure.
ClientErrorHook = Hook[[Exception, "TLSTransport"], object]
#: on_keylog(line): one NSS key-log line (bytes, with its newline).
KeylogHook = Hook[[bytes], object]
#: check_server_identity(hostname, cert): None, or the error to refuse the server with
#: (raising it works too). Plain or async: an async one pauses the handshake until it answers.
CheckServerIdentity = Hook[[str, dict[str, Any]], BaseException | None]
#: on_ocsp_response(response): the stapled OCSP response, or None when none came.
OCSPResponseHook = Hook[[bytes | None], object]
#: on_session(session_data): a session (ticket) to resume with later as ``session=``.
SessionHook = Hook[[bytes], object]
#: One address of ``getaddrinfo``: (family, type, proto, canonname, sockaddr).
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


class Lookup(Protocol):
    """``lookup``: resolves a host like ``loop.getaddrinfo`` (or ``socket.getaddrinfo``)."""

    def __call__(
        self, host: str, port: int, *, type: int
    ) -> Sequence[AddrInfo] | Awaitable[Sequence[AddrInfo]]: ...


_Callback = Callable[..., Any]


def _session(name: str, value: object) -> bytes | None:
    """Session bytes (as get_session() or on_session gave them), or None."""
    if value is not None and not isinstance(value, bytes | bytearray):
        raise TypeError(f"{name}: expected the bytes of get_session() or on_session")
    return bytes(value) if value is not None else None


class _BothSides(TypedDict, total=False):
    """Connection options of servers and clients alike."""

    handshake_timeout: Annotated[
        float,
        Opt(
            "seconds the handshake may take (0: no limit)",
            default=DEFAULT_HANDSHAKE_TIMEOUT,
            check=_checks.timeout,
        ),
    ]
    shutdown_timeout: Annotated[
        float,
        Opt(
            "seconds close() waits for the peer's close_notify (0: none)",
            default=DEFAULT_SHUTDOWN_TIMEOUT,
            node="",
            check=_checks.timeout,
        ),
    ]
    suppress_ragged_eofs: Annotated[
        bool,
        Opt(
            "a TCP EOF without close_notify ends the stream (else it is a TLSError)",
            default=False,
            node="",
            check=_checks.expect_bool,
        ),
    ]
    on_keylog: Annotated[
        KeylogHook | None,
        Opt("receives each NSS key-log line (bytes)", node="'keylog' event", check=_checks.hook),
    ]
    sslkeylogfile: Annotated[
        bool,
        Opt(
            "append key-log lines to the file named by $SSLKEYLOGFILE",
            default=False,
            node="--tls-keylog",
            check=_checks.expect_bool,
        ),
    ]


class _ServerSide(TypedDict, total=False):
    """Connection options of servers only."""

    alpn_protocols: Annotated[
        Sequence[str | bytes] | ALPNSelector | None,
        Opt("ALPN: a list in preference order, or a selector callable", node="ALPNProtocols"),
    ]
    on_client_hello: Annotated[
        ClientHelloHook | None,
        Opt(
            "inspects each ClientHello first: go on, choose the context, or refuse",
            node="",
            check=_checks.hook,
        ),
    ]
    sni_callback: Annotated[
        SNICallback | None,
        Opt(
            "chooses the context by the server name the client asks for",
            node="SNICallback",
            check=_checks.hook,
        ),
    ]
    allow_renegotiation: Annotated[
        bool,
        Opt(
            "allow client renegotiation, CLIENT_RENEG_LIMIT times per CLIENT_RENEG_WINDOW s",
            default=False,
            node="",
            check=_checks.expect_bool,
        ),
    ]
    on_ocsp_request: Annotated[
        OCSPRequestHook | None,
        Opt(
            "the OCSP response to staple when a client asks",
            node="'OCSPRequest' event",
            check=_checks.hook,
        ),
    ]
    on_new_session: Annotated[
        NewSessionHook | None,
        Opt(
            "stores each new session in an external store",
            node="'newSession' event",
            check=_checks.hook,
        ),
    ]
    on_resume_session: Annotated[
        ResumeSessionHook | None,
        Opt(
            "the stored session data for a TLS 1.2 session id, or None",
            node="'resumeSession' event",
            check=_checks.hook,
        ),
    ]
    on_secure_connection: Annotated[
        SecureConnectionHook | None,
        Opt(
            "each connection whose handshake succeeded",
            node="'secureConnection' event",
            check=_checks.hook,
        ),
    ]
    on_tls_client_error: Annotated[
        ClientErrorHook | None,
        Opt(
            "each handshake that failed (without it, failures are logged)",
            node="'tlsClientError' event",
            check=_checks.hook,
        ),
    ]


class _ClientSide(TypedDict, total=False):
    """Connection options of clients only."""

    servername: Annotated[
        str | None,
        Opt("SNI and the name the identity check uses (default: the host)", check=_checks.text),
    ]
    session: Annotated[
        bytes | None, Opt("a session to resume (get_session() or on_session)", check=_session)
    ]
    check_server_identity: Annotated[
        CheckServerIdentity | None, Opt("replaces the RFC 6125 host name check", check=_checks.hook)
    ]
    min_dh_size: Annotated[
        int,
        Opt(
            "refuse a DHE server whose prime has fewer bits",
            default=1024,
            node="minDHSize",
            check=_checks.bits,
        ),
    ]
    request_ocsp: Annotated[
        bool,
        Opt(
            "ask the server to staple an OCSP response",
            default=False,
            node="requestOCSP",
            check=_checks.expect_bool,
        ),
    ]
    on_ocsp_response: Annotated[
        OCSPResponseHook | None,
        Opt(
            "the stapled OCSP response (None: none came)",
            node="'OCSPResponse' event",
            check=_checks.hook,
        ),
    ]
    on_session: Annotated[
        SessionHook | None,
        Opt(
            "each session (TLS 1.3: each ticket) to resume with later",
            node="'session' event",
            check=_checks.hook,
        ),
    ]
    lookup: Annotated[
        Lookup | None,
        Opt("resolves the host, like loop.getaddrinfo (plain or async)", check=_checks.hook),
    ]


class _Stapling(TypedDict, total=False):
    """Automatic OCSP stapling (:mod:`aiotls.stapling`) for a listening server."""

    ocsp_stapling: Annotated[
        Literal["auto"] | OCSPStapler | None,
        Opt(
            "'auto': fetch, verify, cache, refresh and staple each certificate's OCSP "
            "response; or an OCSPStapler of yours (start_tls takes only that)",
            node="",
        ),
    ]
    ocsp_cache_dir: Annotated[
        str | os.PathLike[str] | None,
        Opt("with ocsp_stapling='auto': keep verified responses here across restarts", node=""),
    ]
    ocsp_must_staple: Annotated[
        MustStaple,
        Opt(
            "with ocsp_stapling='auto': 'enforce' refuses a Must-Staple certificate's "
            "status requests without a valid staple; 'ignore' staples it like any other",
            default="enforce",
            node="",
        ),
    ]


class ServerOptions(_ContextOptionsBase, _BothSides, _ServerSide, _Stapling, total=False):
    """The keywords of the server front doors: context options, then the server's own."""


class ClientOptions(ContextOptions, _BothSides, _ClientSide, total=False):
    """The keywords of the client front doors: context options, then the client's own."""


_SERVER = option_names(ServerOptions)
_CLIENT = option_names(ClientOptions)

_CONTEXT_HEADING = "Context options (they build the context when ``context`` is None)"
_BOTH_HEADING = "Options of both sides"
#: The sections help() shows for the server front doors: (heading, options).
SERVER_HELP = (
    ("Server options", _ServerSide),
    ("OCSP stapling", _Stapling),
    (_BOTH_HEADING, _BothSides),
    (_CONTEXT_HEADING, _ContextOptionsBase),
)
#: The sections help() shows for the client front doors.
CLIENT_HELP = (
    ("Client options", _ClientSide),
    (_BOTH_HEADING, _BothSides),
    (_CONTEXT_HEADING, ContextOptions),
)
#: The sections of start_tls, which serves either side.
EITHER_SIDE_HELP = (
    ("Server options (``server_side=True``)", _ServerSide),
    ("OCSP stapling (``server_side=True``)", _Stapling),
    ("Client options (``server_side=False``)", _ClientSide),
    (_BOTH_HEADING, _BothSides),
    (_CONTEXT_HEADING, ContextOptions),
)

#: Every connection option (not context) of either side, with its Opt (a server's
#: alpn_protocols is the context's option, which split() takes as a selector too).
CONNECTION_SPECS = {
    name: opt
    for table in (_BothSides, _ServerSide, _Stapling, _ClientSide)
    for name, opt in option_specs(table).items()
    if name not in CONTEXT_OPTIONS
}


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Per-connection settings that are not part of the SecureContext.

    A field per connection option with a checker in the table, with the table's default
    (tests/test_verify_and_options.py holds them equal), but ``sslkeylogfile`` (folded
    into ``on_keylog``); plus what :func:`split` derives: ``server_side``,
    ``alpn_callback`` and ``ocsp_stapler``.
    """

    server_side: bool = False
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    suppress_ragged_eofs: bool = False
    on_keylog: _Callback | None = None
    # server
    allow_renegotiation: bool = False
    sni_callback: _Callback | None = None
    on_client_hello: _Callback | None = None
    alpn_callback: _Callback | None = None
    on_secure_connection: _Callback | None = None
    on_tls_client_error: _Callback | None = None
    on_ocsp_request: _Callback | None = None
    on_new_session: _Callback | None = None
    on_resume_session: _Callback | None = None
    ocsp_stapler: OCSPStapler | None = None  # also the on_ocsp_request hook
    # client
    servername: str | None = None
    session: bytes | None = None
    check_server_identity: _Callback | None = None
    min_dh_size: int = 1024
    request_ocsp: bool = False
    on_ocsp_response: _Callback | None = None
    on_session: _Callback | None = None
    lookup: _Callback | None = None


def _append_to_sslkeylogfile(line: bytes) -> None:
    """Append one NSS key-log line to $SSLKEYLOGFILE (read per line, as curl does)."""
    path = os.environ.get("SSLKEYLOGFILE")
    if path:
        with open(path, "ab") as f:
            f.write(line)


def _keylog_hook(hook: _Callback | None, sslkeylogfile: bool) -> _Callback | None:
    """on_keylog, also appending to $SSLKEYLOGFILE when ``sslkeylogfile`` asks."""
    if not sslkeylogfile:
        return hook
    if hook is None:
        return _append_to_sslkeylogfile

    def both(line: bytes) -> object:
        _append_to_sslkeylogfile(line)
        return hook(line)

    return both


def _stapler(values: dict[str, Any]) -> OCSPStapler | None:
    """Take the stapling options out of ``values``: the stapler ``ocsp_stapling`` asks for
    (made here for 'auto'), or None; checks that its companion options come with 'auto'
    and that no on_ocsp_request competes."""
    stapling = values.pop("ocsp_stapling")
    given = {name: values.pop(name) for name in ("ocsp_cache_dir", "ocsp_must_staple")}
    companions = {name: value for name, value in given.items() if value is not None}
    hook = values["on_ocsp_request"]
    if stapling != "auto" and companions:
        raise ValueError(
            f"{next(iter(companions))}: only with ocsp_stapling='auto' "
            "(an OCSPStapler takes cache_dir= and must_staple= itself)"
        )
    if stapling is None:
        return None
    if hook is not None:
        raise ValueError("ocsp_stapling: it staples through on_ocsp_request; give one or the other")
    if isinstance(stapling, OCSPStapler):
        return stapling
    if stapling != "auto":
        raise (ValueError if isinstance(stapling, str) else TypeError)(
            f"ocsp_stapling: expected 'auto' or an aiotls.stapling.OCSPStapler, got {stapling!r}"
        )
    return OCSPStapler(
        cache_dir=companions.get("ocsp_cache_dir"),
        must_staple=companions.get(
            "ocsp_must_staple", CONNECTION_SPECS["ocsp_must_staple"].default
        ),
    )


def check_names(
    door: Callable[..., object], kwargs: Mapping[str, object], *, server_side: bool
) -> None:
    """TypeError for a keyword the front door ``door`` does not take, naming the option (or
    the door's own keyword, such as asyncio's ``backlog``) it likely meant; mypy says so too,
    this is for callers it did not check."""
    allowed = _SERVER if server_side else _CLIENT
    unknown = set(kwargs) - allowed
    if unknown:
        params = inspect.signature(door).parameters.values()
        own = {p.name for p in params if p.kind is not p.VAR_KEYWORD}
        side, what = (
            (_ClientSide, "a client option") if server_side else (_ServerSide, "a server option")
        )
        other = dict.fromkeys(option_names(side), what)
        raise unknown_options(door.__name__, unknown, allowed | own, other)


def split(
    kwargs: Mapping[str, Any], *, server_side: bool, context: SecureContext | None
) -> tuple[SecureContext, ConnectionOptions]:
    """Validate a front door's keywords (their names already passed :func:`check_names`);
    build the context unless one was given."""
    ctx_kwargs = {k: v for k, v in kwargs.items() if k in CONTEXT_OPTIONS}
    conn_kwargs = {k: v for k, v in kwargs.items() if k not in CONTEXT_OPTIONS}
    alpn_callback = None
    if callable(ctx_kwargs.get("alpn_protocols")):
        if not server_side:
            raise TypeError("alpn_protocols: a callable is a server option; clients give a list")
        alpn_callback = ctx_kwargs.pop("alpn_protocols")
    if context is None:
        context = create_secure_context(**ctx_kwargs)
    elif not isinstance(context, SecureContext):
        raise TypeError(f"context: expected a SecureContext, got {type(context).__name__}")
    values = validated(CONNECTION_SPECS, conn_kwargs)
    values["on_keylog"] = _keylog_hook(values["on_keylog"], values.pop("sslkeylogfile"))
    stapler = _stapler(values)
    if stapler is not None:
        values["on_ocsp_request"] = stapler
    opts = ConnectionOptions(
        server_side=server_side, alpn_callback=alpn_callback, ocsp_stapler=stapler, **values
    )
    prepare(context, opts)
    return context, opts


def prepare(context: SecureContext, opts: ConnectionOptions) -> None:
    """Have ``context`` ready for what ``opts`` ask (features checked, naming the option;
    session cache modes added), here at the front door rather than per connection."""
    context._prepare(
        client_sessions=opts.on_session is not None,
        session_store=opts.on_resume_session is not None,
        async_alpn=inspect.iscoroutinefunction(opts.alpn_callback),
        new_sessions=opts.on_new_session is not None,
        keylog=opts.on_keylog is not None,
        client_hello=opts.on_client_hello is not None,
    )
