"""Every C callback OpenSSL makes into aiotls, and the one interface they reach it through.

A connection's owner (the engine) implements :class:`ConnectionCallbacks`; the floor's
:class:`~aiotls._openssl.connection.SSLConnection` registers it for its ``SSL*`` (:func:`register`).
Each callback here is module level (cffi keeps it alive for the life of the process),
decodes OpenSSL's arguments into Python values, asks the connection's owner, encodes the
answer, and never lets a Python exception escape into OpenSSL: a failure becomes
OpenSSL's failure value, a clean handshake failure the engine reports.
"""

from __future__ import annotations

import weakref
from typing import Any, Literal, Protocol

from . import extended
from .binding import certificate, ffi, lib

__all__ = [
    "ConnectionCallbacks",
    "alpn_offsets",
    "alpn_select_callback",
    "callbacks_of",
    "cert_callback",
    "client_hello_callback",
    "forget",
    "get_session_callback",
    "keylog_callback",
    "new_session_callback",
    "register",
    "status_callback",
    "verify_callback",
]


class ConnectionCallbacks(Protocol):
    """What OpenSSL's callbacks ask of a connection's owner (the engine).

    Return values use OpenSSL's conventions only where noted; everything else is Python.
    """

    def client_hello(self) -> int | tuple[int, int]:
        """Early in each ClientHello (server): 1 go on, -1 suspend, 0 refuse (with the
        handshake_failure alert), ``(0, alert)`` refuse with that alert."""

    def select_certificate(self) -> int:
        """The certificate callback, after the ClientHello (server): 1, -1 or 0 as above."""

    def verify(self, preverify_ok: bool, code: int, cert: Any) -> bool:
        """OpenSSL verified one certificate of the chain (``cert`` the cryptography
        certificate at fault when it failed, else None): True to go on."""

    def select_alpn(self, offered: list[bytes]) -> bytes | Literal[False] | None:
        """Server: the protocol to use from ``offered``; None refuses the handshake;
        False ignores the extension (a server without ALPN)."""

    def ocsp_status(self, stapled: bytes | None) -> bytes | None:
        """OCSP: a server answers the response to staple; a client is told the one
        stapled (None if none) and answers None."""

    #: Which side of the connection the owner is.
    server_side: bool

    @property
    def reports_sessions(self) -> bool:
        """Whether :meth:`new_session` wants to hear (saves serialising every session)."""

    def new_session(self, session_id: bytes, session_der: bytes) -> None:
        """OpenSSL made a resumable session (a server's, or a client's ticket)."""

    def lookup_session(self, session_id: bytes) -> bytes | None:
        """Server: the DER of the session an external store gave for ``session_id``."""

    def keylog(self, line: bytes) -> None:
        """One NSS key-log line, newline included."""


#: Each live ``SSL*`` (a non-owning pointer: cffi pointers hash and compare by address)
#: to a weak reference to its owner, so that the registry keeps no connection alive.
_owners: dict[Any, weakref.ref[ConnectionCallbacks]] = {}


def register(ssl: Any, owner: ConnectionCallbacks) -> None:
    """Have the callbacks of ``ssl`` reach ``owner`` until :func:`forget`."""
    _owners[ffi.cast("SSL *", ssl)] = weakref.ref(owner)


def forget(ssl: Any) -> None:
    """The callbacks of ``ssl`` reach nobody from now on (released, or freed)."""
    _owners.pop(ssl, None)


def callbacks_of(ssl: Any) -> ConnectionCallbacks | None:
    """The owner of an ``SSL*`` (None once it has been released)."""
    ref = _owners.get(ssl)
    return None if ref is None else ref()


def alpn_offsets(data: bytes) -> dict[bytes, int]:
    """An ALPN wire-format list as {protocol: offset of its name}, in the client's order."""
    items: dict[bytes, int] = {}
    i = 0
    while i < len(data):
        n = data[i]
        items.setdefault(data[i + 1 : i + 1 + n], i + 1)
        i += 1 + n
    return items


@ffi.callback("int(int, X509_STORE_CTX *)", onerror=lambda *exc: 0)  # type: ignore[untyped-decorator]
def verify_callback(preverify_ok: int, store: Any) -> int:
    """Tell the owner which certificate a verify error concerns, and let it decide."""
    ssl = lib.X509_STORE_CTX_get_ex_data(store, lib.SSL_get_ex_data_X509_STORE_CTX_idx())
    owner = callbacks_of(ssl)
    if owner is None:
        return preverify_ok
    cert = None
    if not preverify_ok:
        x509 = lib.X509_STORE_CTX_get_current_cert(store)
        if x509 != ffi.NULL:
            cert = certificate(x509)
    code = lib.X509_STORE_CTX_get_error(store)
    return 1 if owner.verify(bool(preverify_ok), code, cert) else 0


@ffi.callback("int(SSL *, void *)", onerror=lambda *exc: 0)  # type: ignore[untyped-decorator]
def cert_callback(ssl: Any, arg: Any) -> int:
    """Once per ClientHello, late: pause for async hooks, or refuse a renegotiation."""
    owner = callbacks_of(ssl)
    return 1 if owner is None else owner.select_certificate()


@ffi.callback(
    "int(SSL *, unsigned char **, unsigned char *, unsigned char *, unsigned int, void *)",
    onerror=lambda *exc: lib.SSL_TLSEXT_ERR_ALERT_FATAL,
)  # type: ignore[untyped-decorator]
def alpn_select_callback(
    ssl: Any, out: Any, outlen: Any, client: Any, client_len: int, arg: Any
) -> int:
    """Ask the owner which of the client's ALPN protocols to use."""
    owner = callbacks_of(ssl)
    if owner is None:
        return int(lib.SSL_TLSEXT_ERR_NOACK)
    offsets = alpn_offsets(ffi.buffer(client, client_len)[:])
    choice = owner.select_alpn(list(offsets))
    if choice is False:
        return int(lib.SSL_TLSEXT_ERR_NOACK)  # a server without ALPN ignores the extension
    if choice is None or choice not in offsets:
        return int(lib.SSL_TLSEXT_ERR_ALERT_FATAL)
    # Point into the client's list, which OpenSSL keeps alive for the callback's caller.
    out[0] = client + offsets[choice]
    outlen[0] = len(choice)
    return int(lib.SSL_TLSEXT_ERR_OK)


@ffi.callback("int(SSL *, void *)", onerror=lambda *exc: 0)  # type: ignore[untyped-decorator]
def status_callback(ssl: Any, arg: Any) -> int:
    """OCSP stapling: a server staples the owner's response; a client hands it the one
    it received."""
    owner = callbacks_of(ssl)
    if owner is None:
        return int(lib.SSL_TLSEXT_ERR_NOACK)
    if owner.server_side:
        data = owner.ocsp_status(None)
        if not data:
            return int(lib.SSL_TLSEXT_ERR_NOACK)
        buf = lib.OPENSSL_malloc(len(data))  # OpenSSL takes ownership
        ffi.memmove(buf, data, len(data))
        lib.SSL_set_tlsext_status_ocsp_resp(ssl, buf, len(data))
        return int(lib.SSL_TLSEXT_ERR_OK)
    out = ffi.new("unsigned char **")
    n = lib.SSL_get_tlsext_status_ocsp_resp(ssl, out)
    owner.ocsp_status(ffi.buffer(out[0], n)[:] if n > 0 and out[0] != ffi.NULL else None)
    return 1


@ffi.callback("void(SSL *, char *)", onerror=lambda *exc: None)  # type: ignore[untyped-decorator]
def keylog_callback(ssl: Any, line: Any) -> None:
    """Hand each NSS key-log line, newline included, to the owner."""
    owner = callbacks_of(ssl)
    if owner is not None:
        owner.keylog(ffi.string(line) + b"\n")


def new_session_callback(ssl: Any, session: Any) -> None:
    """OpenSSL made a session (see :func:`extended.set_new_session_cb`)."""
    owner = callbacks_of(ssl)
    if owner is not None and owner.reports_sessions:
        owner.new_session(extended.session_id(session), extended.session_der(session))


def client_hello_callback(ssl: Any) -> int | tuple[int, int]:
    """Early ClientHello (see :func:`extended.set_client_hello_cb`)."""
    owner = callbacks_of(ssl)
    return 1 if owner is None else owner.client_hello()


def get_session_callback(ssl: Any, session_id: bytes) -> bytes | None:
    """An external session lookup (see :func:`extended.set_get_session_cb`)."""
    owner = callbacks_of(ssl)
    return None if owner is None else owner.lookup_session(session_id)
