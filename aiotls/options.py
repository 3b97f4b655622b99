"""Connection options: split the front doors' keywords into a context and per-connection settings.

Context options build a :class:`~aiotls.SecureContext` when ``context=`` is not
given (when it is, the context wins, as in Node). The rest (timeouts and hooks)
become a :class:`ConnectionOptions`, checked here so that a bad value raises at
the call that received it, naming the option.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from . import _extended
from .context import (
    CONTEXT_OPTIONS,
    SecureContext,
    create_secure_context,
    expect_bool,
    unknown_options,
)

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "ConnectionOptions",
    "check_names",
    "split",
]

#: asyncio's value (Node's is 120 s): long enough for slow links, short enough to reap stalls.
DEFAULT_HANDSHAKE_TIMEOUT = 60.0
#: How long close() waits for the peer's close_notify before dropping the connection.
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

_BOTH = {
    "handshake_timeout",
    "shutdown_timeout",
    "suppress_ragged_eofs",
    "on_keylog",
    "sslkeylogfile",
}
_SERVER = {
    "sni_callback", "on_secure_connection", "on_tls_client_error", "allow_renegotiation",
    "on_ocsp_request", "on_new_session", "on_resume_session",
}  # fmt: skip
_CLIENT = {
    "servername", "session", "check_server_identity", "min_dh_size", "request_ocsp",
    "on_ocsp_response", "on_session", "lookup",
}  # fmt: skip

Hook = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Per-connection settings that are not part of the SecureContext."""

    server_side: bool = False
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    suppress_ragged_eofs: bool = False
    on_keylog: Hook | None = None
    # server
    allow_renegotiation: bool = False
    sni_callback: Hook | None = None
    alpn_callback: Hook | None = None
    on_secure_connection: Hook | None = None
    on_tls_client_error: Hook | None = None
    on_ocsp_request: Hook | None = None
    on_new_session: Hook | None = None
    on_resume_session: Hook | None = None
    # client
    servername: str | None = None
    session: bytes | None = None
    check_server_identity: Hook | None = None
    min_dh_size: int = 1024
    request_ocsp: bool = False
    on_ocsp_response: Hook | None = None
    on_session: Hook | None = None
    lookup: Hook | None = None


def _timeout(name: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name}: expected seconds as a number, got {type(value).__name__}")
    if value < 0 or math.isnan(value):
        raise ValueError(f"{name}: must be >= 0 seconds, got {value!r}")
    return float(value)


def _hook(name: str, value: object) -> Hook | None:
    if value is not None and not callable(value):
        raise TypeError(f"{name}: expected a callable, got {type(value).__name__}")
    return value


def _append_to_sslkeylogfile(line: bytes) -> None:
    """Append one NSS key-log line to $SSLKEYLOGFILE (read per line, as curl does)."""
    path = os.environ.get("SSLKEYLOGFILE")
    if path:
        with open(path, "ab") as f:
            f.write(line)


def _keylog_hook(on_keylog: object, sslkeylogfile: object) -> Hook | None:
    hook = _hook("on_keylog", on_keylog)
    expect_bool("sslkeylogfile", sslkeylogfile)
    if not sslkeylogfile:
        return hook
    if hook is None:
        return _append_to_sslkeylogfile

    def both(line: bytes) -> object:
        _append_to_sslkeylogfile(line)
        return hook(line)

    return both


def check_names(
    where: str,
    kwargs: Mapping[str, object],
    *,
    server_side: bool,
    passthrough: Collection[str] = (),
) -> None:
    """TypeError for a keyword the front door ``where`` does not take, naming the one it likely
    meant; ``passthrough`` are asyncio's own keywords that the front door hands on."""
    allowed = CONTEXT_OPTIONS | _BOTH | (_SERVER if server_side else _CLIENT) | set(passthrough)
    unknown = set(kwargs) - allowed
    if unknown:
        other, what = (_CLIENT, "a client option") if server_side else (_SERVER, "a server option")
        raise unknown_options(where, unknown, allowed | {"context"}, dict.fromkeys(other, what))


def split(
    kwargs: dict[str, Any], *, server_side: bool, context: SecureContext | None
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
        if inspect.iscoroutinefunction(alpn_callback):  # awaited at the ClientHello pause
            _extended.require("client_hello_cb", "alpn_protocols")
    if context is None:
        context = create_secure_context(**ctx_kwargs)
    elif not isinstance(context, SecureContext):
        raise TypeError(f"context: expected a SecureContext, got {type(context).__name__}")
    servername = conn_kwargs.get("servername")
    if servername is not None and not isinstance(servername, str):
        raise TypeError("servername: expected str")
    session = conn_kwargs.get("session")
    if session is not None and not isinstance(session, bytes | bytearray):
        raise TypeError("session: expected the bytes of get_session() or on_session")
    ragged = expect_bool("suppress_ragged_eofs", conn_kwargs.get("suppress_ragged_eofs", False))
    min_dh_size = conn_kwargs.get("min_dh_size", 1024)
    if not isinstance(min_dh_size, int) or isinstance(min_dh_size, bool):
        raise TypeError("min_dh_size: expected an int number of bits")
    if min_dh_size <= 0:
        raise ValueError("min_dh_size: must be positive")
    allow_reneg = expect_bool("allow_renegotiation", conn_kwargs.get("allow_renegotiation", False))
    opts = ConnectionOptions(
        server_side=server_side,
        handshake_timeout=_timeout(
            "handshake_timeout", conn_kwargs.get("handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT)
        ),
        shutdown_timeout=_timeout(
            "shutdown_timeout", conn_kwargs.get("shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT)
        ),
        suppress_ragged_eofs=ragged,
        allow_renegotiation=allow_reneg,
        on_keylog=_keylog_hook(
            conn_kwargs.get("on_keylog"), conn_kwargs.get("sslkeylogfile", False)
        ),
        sni_callback=_hook("sni_callback", conn_kwargs.get("sni_callback")),
        alpn_callback=alpn_callback,
        on_secure_connection=_hook("on_secure_connection", conn_kwargs.get("on_secure_connection")),
        on_tls_client_error=_hook("on_tls_client_error", conn_kwargs.get("on_tls_client_error")),
        servername=servername,
        session=bytes(session) if session is not None else None,
        check_server_identity=_hook(
            "check_server_identity", conn_kwargs.get("check_server_identity")
        ),
        lookup=_hook("lookup", conn_kwargs.get("lookup")),
        min_dh_size=min_dh_size,
        on_ocsp_request=_hook("on_ocsp_request", conn_kwargs.get("on_ocsp_request")),
        on_new_session=_hook("on_new_session", conn_kwargs.get("on_new_session")),
        on_resume_session=_hook("on_resume_session", conn_kwargs.get("on_resume_session")),
        request_ocsp=expect_bool("request_ocsp", conn_kwargs.get("request_ocsp", False)),
        on_ocsp_response=_hook("on_ocsp_response", conn_kwargs.get("on_ocsp_response")),
        on_session=_hook("on_session", conn_kwargs.get("on_session")),
    )
    return context, opts
