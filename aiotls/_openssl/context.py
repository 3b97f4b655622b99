"""One OpenSSL ``SSL_CTX`` as plain Python calls: what building a SecureContext needs
(versions, ciphers, identity, trust, groups, DH parameters, NPN, ALPN, ticket keys,
session cache modes) and the C callbacks every context carries.

Everything here runs while a context is built (or, for ticket keys and session cache
modes, while a front door is configured), never because a connection started. OpenSSL's
refusals raise :class:`Refused` with OpenSSL's reason; the caller names the option.
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from cryptography import x509
from OpenSSL import SSL, crypto

from . import callbacks, extended
from .binding import cipher_list, error_queue, ffi, lib

__all__ = ["TLS_VERSIONS", "NativeContext", "Refused", "cipher_names", "new_context"]

#: Protocol versions by Node's names, as OpenSSL numbers them.
TLS_VERSIONS: Final[dict[str, int]] = {
    "TLSv1": SSL.TLS1_VERSION,
    "TLSv1.1": SSL.TLS1_1_VERSION,
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}

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


class Refused(ValueError):
    """OpenSSL refused a setting; the message is OpenSSL's reason."""


def _reason(exc: SSL.Error) -> str:
    """OpenSSL's reason text out of a pyOpenSSL error."""
    try:
        return str(exc.args[0][0][2])
    except (IndexError, TypeError):
        return str(exc)


def _refusals(call: Callable[[], object]) -> None:
    """Run ``call``, turning pyOpenSSL's error into :class:`Refused`."""
    try:
        call()
    except SSL.Error as exc:
        raise Refused(_reason(exc)) from None


def cipher_names() -> list[str]:
    """The names of every cipher this OpenSSL offers (Node's tls.getCiphers())."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_cipher_list(b"ALL:!COMPLEMENTOFDEFAULT:!eNULL:@STRENGTH")
    return cipher_list(ffi.gc(lib.SSL_new(ctx._context), lib.SSL_free))


def new_context() -> NativeContext:
    """A TLS context for both sides: whole writes (one SSL_write per send), no idle
    34 KiB buffers per connection, no compression, the chain sent exactly as configured
    (never completed from the trust store, which every context now loads), and the C
    callbacks every connection may need (ALPN, OCSP status, the ClientHello; each asks
    the connection's owner). Key logging and session reports are wired on request
    (:meth:`NativeContext.enable_keylog`, :meth:`NativeContext.report_sessions`)."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.clear_mode(lib.SSL_MODE_ENABLE_PARTIAL_WRITE)
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS | _MODE_NO_AUTO_CHAIN | lib.SSL_MODE_AUTO_RETRY)
    ctx.set_options(SSL.OP_NO_COMPRESSION)
    ptr = ctx._context
    lib.SSL_CTX_set_alpn_select_cb(ptr, callbacks.alpn_select_callback, ffi.NULL)
    lib.SSL_CTX_set_tlsext_status_cb(ptr, callbacks.status_callback)
    if extended.has("client_hello_cb"):
        extended.set_client_hello_cb(ptr, callbacks.client_hello_callback)
    return NativeContext(ctx)


class NativeContext:
    """An ``SSL_CTX`` (through pyOpenSSL's Context, which owns and frees it)."""

    __slots__ = ("native", "pointer")

    def __init__(self, native: SSL.Context) -> None:
        self.native = native
        #: The ``SSL_CTX*`` (alive as long as ``native``).
        self.pointer = native._context

    # -- protocol and ciphers ----------------------------------------------------------

    def set_versions(self, low: int | None, high: int | None) -> None:
        """The lowest and highest protocol versions (None: OpenSSL's bound)."""
        if low is not None:
            self.native.set_min_proto_version(low)
        if high is not None:
            self.native.set_max_proto_version(high)

    def set_cipher_list(self, ciphers: str) -> None:
        """TLS 1.2 and lower suites, in OpenSSL's syntax."""
        _refusals(lambda: self.native.set_cipher_list(ciphers.encode()))

    def set_ciphersuites(self, suites: str) -> None:
        """TLS 1.3 suites."""
        _refusals(lambda: self.native.set_tls13_ciphersuites(suites.encode()))

    def prefer_server_ciphers(self) -> None:
        """Servers choose the suite in their own order."""
        self.native.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)

    def add_options(self, bits: int) -> None:
        """SSL_OP_* bits."""
        self.native.set_options(bits)

    def set_session_timeout(self, seconds: int) -> None:
        """How long sessions (and tickets) stay resumable."""
        self.native.set_timeout(seconds)

    def set_alpn(self, protocols: list[bytes]) -> None:
        """The ALPN protocols a client offers (servers answer through the callback)."""
        self.native.set_alpn_protos(protocols)

    def set_session_id_context(self, sid: bytes) -> None:
        """The session id context (servers resume only sessions made under it)."""
        self.native.set_session_id(sid)

    def set_groups(self, groups: str) -> bool:
        """SSL_CTX_set1_groups_list (declared by cryptography as its older name, curves)."""
        ok = bool(lib.SSL_CTX_set1_curves_list(self.native._context, groups.encode()) == 1)
        error_queue()
        return ok

    def set_dh_params(self, pem: bytes) -> str | None:
        """Install PEM DH parameters (enables DHE suites); OpenSSL's reason if refused."""
        bio = lib.BIO_new_mem_buf(pem, len(pem))
        try:
            dh = lib.PEM_read_bio_DHparams(bio, ffi.NULL, ffi.NULL, ffi.NULL)
        finally:
            lib.BIO_free(bio)
        if dh == ffi.NULL:
            return "; ".join(error_queue()) or "not DH parameters"
        try:
            ok = lib.SSL_CTX_set_tmp_dh(self.native._context, dh) == 1
        finally:
            lib.DH_free(dh)
        reasons = error_queue()
        return None if ok else "; ".join(reasons) or "refused"

    # -- identity and trust ------------------------------------------------------------

    def use_identity(self, chain: list[x509.Certificate], key: Any) -> None:
        """A certificate (chain[0]), its key and its chain: its own chain where OpenSSL
        allows (each key type keeps one), else the context's shared one. Refused when the
        key does not match."""
        ctx = self.native
        ctx.use_certificate(chain[0])

        def use_key() -> None:
            ctx.use_privatekey(key)
            ctx.check_privatekey()

        _refusals(use_key)
        for cert in chain[1:]:
            if extended.has("chain_per_cert"):
                extended.add_chain_cert(ctx._context, crypto.X509.from_cryptography(cert)._x509)
            else:
                ctx.add_extra_chain_cert(crypto.X509.from_cryptography(cert))

    def add_trust(self, cas: list[x509.Certificate]) -> None:
        """Trust ``cas``, and name them to clients asked for a certificate."""
        store = self.native.get_cert_store()
        assert store is not None  # SSL_CTX_new always makes one
        for cert in cas:
            store.add_cert(crypto.X509.from_cryptography(cert))
        for cert in cas:
            self.native.add_client_ca(cert)

    def add_crls(self, crls: list[x509.CertificateRevocationList]) -> None:
        """Check peers' chains against ``crls`` (every certificate of the chain)."""
        store = self.native.get_cert_store()
        assert store is not None
        for crl in crls:
            store.add_crl(crl)
        store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)

    def load_default_trust(self) -> None:
        """The system trust store, as pyOpenSSL's ``set_default_verify_paths`` finds it,
        preferring a hashed directory (looked up per issuer, so a context costs ~0.1 ms,
        not the ~5 ms of parsing a whole bundle) and falling back to a bundle file."""
        ptr = self.native._context
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

    # -- extended: NPN, ticket keys, session cache modes -------------------------------

    def set_npn(self, protocols: Sequence[bytes]) -> None:
        """Advertise (server) and select from (client) ``protocols`` via NPN."""
        extended.require("npn", "npn_protocols")
        extended.set_npn_advertised(self.native._context, protocols)
        extended.set_npn_select(self.native._context, protocols)

    def set_ticket_keys(self, keys: bytes, option: str) -> None:
        """Install 80 bytes of session ticket keys (see :func:`extended.set_ticket_keys`)."""
        extended.require("ticket_keys", option)
        extended.set_ticket_keys(self.native._context, keys)

    def get_ticket_keys(self, option: str) -> bytes:
        """The context's 80 bytes of session ticket keys."""
        extended.require("ticket_keys", option)
        return extended.get_ticket_keys(self.native._context)

    def _add_cache_mode(self, bits: int) -> None:
        """Add SSL_SESS_CACHE_* bits (idempotent; also on a context already in use)."""
        with _modes_lock:
            mode = lib.SSL_CTX_get_session_cache_mode(self.native._context)
            lib.SSL_CTX_set_session_cache_mode(self.native._context, mode | bits)

    def enable_keylog(self) -> None:
        """Hand every handshake's NSS key-log lines to the connection's owner."""
        lib.SSL_CTX_set_keylog_callback(self.native._context, callbacks.keylog_callback)

    def report_sessions(self, option: str) -> None:
        """Hand every session OpenSSL makes to the connection's owner."""
        extended.require("new_session_cb", option)
        with _modes_lock:
            extended.set_new_session_cb(self.native._context, callbacks.new_session_callback)

    def enable_client_session_cache(self, option: str) -> None:
        """Have OpenSSL report clients' sessions (only with SSL_SESS_CACHE_CLIENT)."""
        self.report_sessions(option)
        self._add_cache_mode(SSL.SESS_CACHE_CLIENT)

    def use_session_store(self, option: str) -> None:
        """Servers look sessions up in the connection's external store, never the cache."""
        extended.require("resume_session", option)
        with _modes_lock:
            extended.set_get_session_cb(self.native._context, callbacks.get_session_callback)
        self._add_cache_mode(SSL.SESS_CACHE_NO_INTERNAL_LOOKUP)
