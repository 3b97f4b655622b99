"""The OpenSSL calls pyOpenSSL does not wrap: C callbacks and error-queue decoding.

Every callback here is module level (so cffi keeps it alive for the life of the
process), finds its :class:`~aiotls.engine.TLSEngine` through pyOpenSSL's
``Connection._reverse_mapping`` and never lets a Python exception escape into
OpenSSL: a failure becomes a clean handshake failure that the engine reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from OpenSSL import SSL, crypto
from OpenSSL._util import ffi, lib

if TYPE_CHECKING:
    from .engine import TLSEngine

__all__ = [
    "PARTIAL_WRITE_MODE",
    "add_session_cache_mode",
    "engine_of",
    "error_queue",
    "ffi",
    "install_alpn_select",
    "install_status_callback",
    "lib",
    "set_dh_params",
    "set_groups",
]

#: pyOpenSSL turns partial writes on; aiotls wants one whole SSL_write per send.
PARTIAL_WRITE_MODE: int = lib.SSL_MODE_ENABLE_PARTIAL_WRITE


def engine_of(ssl: Any) -> TLSEngine | None:
    """The engine that owns an ``SSL*`` (None once it has been released)."""
    conn = SSL.Connection._reverse_mapping.get(ssl)
    return None if conn is None else conn.get_app_data()


def error_queue() -> list[str]:
    """Drain OpenSSL's thread error queue into a list of reason strings."""
    reasons = []
    while code := lib.ERR_get_error():
        text = lib.ERR_reason_error_string(code)
        reasons.append(ffi.string(text).decode() if text != ffi.NULL else f"error {code:#x}")
    return reasons


def set_groups(ctx: SSL.Context, groups: str) -> bool:
    """SSL_CTX_set1_groups_list (declared by cryptography as its older name, curves)."""
    ok = bool(lib.SSL_CTX_set1_curves_list(ctx._context, groups.encode()) == 1)
    error_queue()
    return ok


def set_dh_params(ctx: SSL.Context, pem: bytes) -> str | None:
    """Install PEM DH parameters (enables DHE suites); OpenSSL's reason if refused."""
    bio = lib.BIO_new_mem_buf(pem, len(pem))
    try:
        dh = lib.PEM_read_bio_DHparams(bio, ffi.NULL, ffi.NULL, ffi.NULL)
    finally:
        lib.BIO_free(bio)
    if dh == ffi.NULL:
        return "; ".join(error_queue()) or "not DH parameters"
    try:
        ok = lib.SSL_CTX_set_tmp_dh(ctx._context, dh) == 1
    finally:
        lib.DH_free(dh)
    reasons = error_queue()
    return None if ok else "; ".join(reasons) or "refused"


def add_session_cache_mode(ctx: SSL.Context, bits: int) -> None:
    """Add SSL_SESS_CACHE_* bits, also on a context already in use (pyOpenSSL refuses)."""
    mode = lib.SSL_CTX_get_session_cache_mode(ctx._context)
    lib.SSL_CTX_set_session_cache_mode(ctx._context, mode | bits)


def install_alpn_select(ctx: SSL.Context) -> None:
    """Have servers on ``ctx`` choose ALPN through the engine (server order, or a hook)."""
    lib.SSL_CTX_set_alpn_select_cb(ctx._context, alpn_select_callback, ffi.NULL)


def _alpn_offsets(data: bytes) -> dict[bytes, int]:
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
    """Tell the engine which certificate a verify error concerns (for its message), then
    go on (the engine judges the chain after the handshake, as Node) or let OpenSSL refuse."""
    ssl = lib.X509_STORE_CTX_get_ex_data(store, lib.SSL_get_ex_data_X509_STORE_CTX_idx())
    engine = engine_of(ssl)
    if engine is None:
        return preverify_ok
    if not preverify_ok:
        x509 = lib.X509_STORE_CTX_get_current_cert(store)
        if x509 != ffi.NULL:
            lib.X509_up_ref(x509)  # the X509 object below owns this reference
            cert = crypto.X509._from_raw_x509_ptr(x509).to_cryptography()
            engine._note_verify_fault(lib.X509_STORE_CTX_get_error(store), cert)
    return 1 if engine._judge_later else preverify_ok


@ffi.callback("int(SSL *, void *)", onerror=lambda *exc: 0)  # type: ignore[untyped-decorator]
def cert_callback(ssl: Any, arg: Any) -> int:
    """Once per ClientHello: pause the handshake for async hooks, or refuse a renegotiation."""
    engine = engine_of(ssl)
    if engine is None:
        return 1
    return engine._on_client_hello()


@ffi.callback(
    "int(SSL *, unsigned char **, unsigned char *, unsigned char *, unsigned int, void *)",
    onerror=lambda *exc: lib.SSL_TLSEXT_ERR_ALERT_FATAL,
)  # type: ignore[untyped-decorator]
def alpn_select_callback(
    ssl: Any, out: Any, outlen: Any, client: Any, client_len: int, arg: Any
) -> int:
    """Pick the server's first ALPN protocol the client also offers (Node's rule)."""
    engine = engine_of(ssl)
    if engine is None or not engine._alpn_configured:
        return int(lib.SSL_TLSEXT_ERR_NOACK)  # a server without ALPN ignores the extension
    wire = ffi.buffer(client, client_len)[:]
    offsets = _alpn_offsets(wire)
    choice = engine._select_alpn(list(offsets))
    if choice is None or choice not in offsets:
        return int(lib.SSL_TLSEXT_ERR_ALERT_FATAL)
    # Point into the client's list, which OpenSSL keeps alive for the callback's caller.
    out[0] = client + offsets[choice]
    outlen[0] = len(choice)
    return int(lib.SSL_TLSEXT_ERR_OK)


@ffi.callback("int(SSL *, void *)", onerror=lambda *exc: 0)  # type: ignore[untyped-decorator]
def status_callback(ssl: Any, arg: Any) -> int:
    """OCSP stapling: a server staples the engine's response; a client collects it."""
    engine = engine_of(ssl)
    return int(lib.SSL_TLSEXT_ERR_NOACK) if engine is None else engine._on_status()


def install_status_callback(ctx: SSL.Context) -> None:
    """Route OpenSSL's OCSP status callback through the engine (both sides)."""
    lib.SSL_CTX_set_tlsext_status_cb(ctx._context, status_callback)


@ffi.callback("void(SSL *, char *)", onerror=lambda *exc: None)  # type: ignore[untyped-decorator]
def keylog_callback(ssl: Any, line: Any) -> None:
    """Hand each NSS key-log line, newline included, to the engine's hook."""
    engine = engine_of(ssl)
    if engine is not None and engine.on_keylog is not None:
        engine.on_keylog(ffi.string(line) + b"\n")
