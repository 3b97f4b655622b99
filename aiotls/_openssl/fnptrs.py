"""The addresses the compiled data path calls OpenSSL through (see aiotls._speedups).

They are cffi's own: ``ffi.addressof`` on cryptography's compiled ``lib`` gives the
``_cffi_d_*`` entry of each function, a direct call into the OpenSSL that cryptography's
wheel carries, the one pyOpenSSL's ``SSL*`` and ``BIO*`` live in. No second OpenSSL is
ever linked.
"""

from __future__ import annotations

import functools

from .binding import ffi, original_lib

__all__ = ["FUNCTIONS", "openssl_functions"]

#: The table's order and each function's C type, as cryptography's cffi declares it; the
#: compiled data path casts each address to exactly this type (``BIO_get_mem_data`` is
#: ``BIO_ctrl_pending`` for a memory BIO, which cffi does not declare).
FUNCTIONS: tuple[tuple[str, str], ...] = (
    ("SSL_read", "int(*)(SSL *, void *, int)"),
    ("SSL_write", "int(*)(SSL *, void *, int)"),
    ("SSL_get_error", "int(*)(SSL *, int)"),
    ("ERR_clear_error", "void(*)()"),
    ("ERR_get_error", "unsigned long(*)()"),
    ("BIO_write", "int(*)(BIO *, void *, int)"),
    ("BIO_read", "int(*)(BIO *, void *, int)"),
    ("BIO_get_mem_data", "long(*)(BIO *, char * *)"),
)


@functools.cache
def openssl_functions() -> tuple[int, ...]:
    """The addresses of :data:`FUNCTIONS`, in order; LookupError says why when one is
    missing or cffi declares it with another signature than the one the C code casts to."""
    lib = original_lib()
    addresses = []
    for name, ctype in FUNCTIONS:
        try:
            pointer = ffi.addressof(lib, name)
        except (AttributeError, ffi.error) as exc:
            raise LookupError(f"cryptography's cffi lib has no {name}: {exc}") from exc
        if ffi.typeof(pointer) != ffi.typeof(ctype):
            raise LookupError(f"{name} is {ffi.typeof(pointer).cname}, expected {ctype}")
        address = int(ffi.cast("uintptr_t", pointer))
        if not address:
            raise LookupError(f"{name} has no address")
        addresses.append(address)
    return tuple(addresses)
