"""cryptography's cffi binding as the floor uses it: ``ffi``, ``lib`` and the error queue
(the addresses a compiled caller needs are :mod:`.fnptrs`').

``lib`` is pyOpenSSL's filtered view of cryptography's compiled cffi library;
:func:`original_lib` is the unfiltered one (``ffi.addressof`` needs it).
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from OpenSSL._util import ffi, lib

__all__ = [
    "address",
    "certificate",
    "cipher_list",
    "error_queue",
    "ffi",
    "lib",
    "original_lib",
]


def original_lib() -> Any:
    """cryptography's compiled cffi ``Lib`` (pyOpenSSL's ``lib`` is a filtered copy)."""
    original = getattr(lib, "_original_lib", None)
    if original is not None:
        return original
    from cryptography.hazmat.bindings._rust import _openssl

    return _openssl.lib


def error_queue() -> list[str]:
    """Drain OpenSSL's thread error queue into a list of reason strings."""
    reasons = []
    while code := lib.ERR_get_error():
        text = lib.ERR_reason_error_string(code)
        reasons.append(ffi.string(text).decode() if text != ffi.NULL else f"error {code:#x}")
    return reasons


def address(pointer: Any) -> int:
    """A cdata pointer (an ``SSL*``, a ``BIO*``...) as an integer address."""
    return int(ffi.cast("uintptr_t", pointer))


def certificate(x509_ptr: Any) -> x509.Certificate:
    """A cryptography certificate from an ``X509*`` (read through DER; the pointer is
    only borrowed)."""
    bio = lib.BIO_new(lib.BIO_s_mem())
    if bio == ffi.NULL:
        raise MemoryError("OpenSSL could not allocate a memory BIO")
    try:
        if lib.i2d_X509_bio(bio, x509_ptr) != 1:
            error_queue()
            raise ValueError("OpenSSL could not encode a certificate")
        data = ffi.new("char **")
        size = lib.BIO_get_mem_data(bio, data)
        return x509.load_der_x509_certificate(ffi.buffer(data[0], size)[:])
    finally:
        lib.BIO_free(bio)


def cipher_list(ssl_ptr: Any) -> list[str]:
    """The names of the ciphers an ``SSL*`` may use, in preference order."""
    names: list[str] = []
    while (name := lib.SSL_get_cipher_list(ssl_ptr, len(names))) != ffi.NULL:
        names.append(ffi.string(name).decode())
    return names
