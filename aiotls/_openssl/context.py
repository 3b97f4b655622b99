"""What a SecureContext needs from OpenSSL beyond pyOpenSSL's public ``SSL.Context``:
groups, DH parameters, per-certificate chains, NPN, ticket keys, the system trust
store, session cache modes, and the C callbacks every context carries.

Everything here runs while a context is built (or, for ticket keys and session cache
modes, while a front door is configured), never because a connection started.
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Sequence
from typing import Final

from cryptography import x509
from OpenSSL import SSL, crypto

from . import callbacks, extended
from .binding import error_queue, ffi, lib

__all__ = [
    "add_chain_cert",
    "enable_client_session_cache",
    "get_ticket_keys",
    "load_default_trust",
    "new_context",
    "set_dh_params",
    "set_groups",
    "set_npn",
    "set_ticket_keys",
    "use_session_store",
]

#: pyOpenSSL's fallbacks for cryptography's manylinux wheels, whose compiled-in trust
#: paths (/opt/pyca/...) exist on no system.
_WHEEL_CA_DIR: Final = b"/opt/pyca/cryptography/openssl/certs"
_WHEEL_CA_FILE: Final = b"/opt/pyca/cryptography/openssl/cert.pem"
_CA_DIRS: Final = ("/etc/ssl/certs", "/etc/pki/tls/certs", "/etc/openssl/certs")
_CA_FILES: Final = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
_modes_lock = threading.Lock()
_MODE_NO_AUTO_CHAIN: Final = 0x8  # SSL_MODE_NO_AUTO_CHAIN; not in cryptography's bindings


def new_context() -> SSL.Context:
    """A TLS context for both sides: whole writes (one SSL_write per send), no idle
    34 KiB buffers per connection, no compression, the chain sent exactly as configured
    (never completed from the trust store, which every context now loads), and aiotls's
    C callbacks (each asks the connection's owner, which answers "nothing to do" when
    it has no hook)."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.clear_mode(lib.SSL_MODE_ENABLE_PARTIAL_WRITE)
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS | _MODE_NO_AUTO_CHAIN)
    ctx.set_options(SSL.OP_NO_COMPRESSION)
    ptr = ctx._context
    lib.SSL_CTX_set_alpn_select_cb(ptr, callbacks.alpn_select_callback, ffi.NULL)
    lib.SSL_CTX_set_tlsext_status_cb(ptr, callbacks.status_callback)
    lib.SSL_CTX_set_keylog_callback(ptr, callbacks.keylog_callback)
    if extended.features()["client_hello_cb"]:
        extended.set_client_hello_cb(ptr, callbacks.client_hello_callback)
    if extended.features()["new_session_cb"]:
        extended.set_new_session_cb(ptr, callbacks.new_session_callback)
    return ctx


def load_default_trust(ctx: SSL.Context) -> None:
    """The system trust store, as pyOpenSSL's ``set_default_verify_paths`` finds it,
    preferring a hashed directory (looked up per issuer, so a context costs ~0.1 ms,
    not the ~5 ms of parsing a whole bundle) and falling back to a bundle file."""
    ptr = ctx._context
    if lib.SSL_CTX_set_default_verify_paths(ptr) != 1:
        error_queue()
    if os.environ.get("SSL_CERT_DIR") or os.environ.get("SSL_CERT_FILE"):
        return  # the user chose; OpenSSL honoured it
    if (
        ffi.string(lib.X509_get_default_cert_dir()) != _WHEEL_CA_DIR
        or ffi.string(lib.X509_get_default_cert_file()) != _WHEEL_CA_FILE
    ):
        return  # a system-linked OpenSSL knows its own paths
    for capath in _CA_DIRS:
        if glob.glob(os.path.join(glob.escape(capath), "*.0")):
            lib.SSL_CTX_load_verify_locations(ptr, ffi.NULL, capath.encode())
            error_queue()
            return
    for cafile in _CA_FILES:
        if os.path.isfile(cafile):
            lib.SSL_CTX_load_verify_locations(ptr, cafile.encode(), ffi.NULL)
            error_queue()
            return


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


def add_chain_cert(ctx: SSL.Context, cert: x509.Certificate) -> None:
    """Append to the chain of the certificate most recently set: its own chain where
    OpenSSL allows (each key type keeps one), else the context's shared one."""
    if extended.features()["chain_per_cert"]:
        extended.add_chain_cert(ctx._context, crypto.X509.from_cryptography(cert)._x509)
    else:
        ctx.add_extra_chain_cert(crypto.X509.from_cryptography(cert))


def set_npn(ctx: SSL.Context, protocols: Sequence[bytes]) -> None:
    """Advertise (server) and select from (client) ``protocols`` via NPN."""
    extended.require("npn", "npn_protocols")
    extended.set_npn_advertised(ctx._context, protocols)
    extended.set_npn_select(ctx._context, protocols)


def set_ticket_keys(ctx: SSL.Context, keys: bytes, option: str) -> None:
    """Install 80 bytes of session ticket keys (see :func:`extended.set_ticket_keys`)."""
    extended.require("ticket_keys", option)
    extended.set_ticket_keys(ctx._context, keys)


def get_ticket_keys(ctx: SSL.Context, option: str) -> bytes:
    """The context's 80 bytes of session ticket keys."""
    extended.require("ticket_keys", option)
    return extended.get_ticket_keys(ctx._context)


def _add_cache_mode(ctx: SSL.Context, bits: int) -> None:
    """Add SSL_SESS_CACHE_* bits (idempotent; also on a context already in use)."""
    with _modes_lock:
        mode = lib.SSL_CTX_get_session_cache_mode(ctx._context)
        lib.SSL_CTX_set_session_cache_mode(ctx._context, mode | bits)


def enable_client_session_cache(ctx: SSL.Context, option: str) -> None:
    """Have OpenSSL report clients' sessions (it does only with SSL_SESS_CACHE_CLIENT)."""
    extended.require("new_session_cb", option)
    _add_cache_mode(ctx, SSL.SESS_CACHE_CLIENT)


def use_session_store(ctx: SSL.Context, option: str) -> None:
    """Servers look sessions up in the connection's external store, never the cache."""
    extended.require("resume_session", option)
    with _modes_lock:
        extended.set_get_session_cb(ctx._context, callbacks.get_session_callback)
    _add_cache_mode(ctx, SSL.SESS_CACHE_NO_INTERNAL_LOOKUP)
