"""cryptography's cffi binding as the floor uses it: ``ffi``, ``lib``, the error queue,
and the addresses of OpenSSL's data-path functions for compiled callers.

``lib`` is pyOpenSSL's filtered view of cryptography's compiled cffi library;
:func:`original_lib` is the unfiltered one (``ffi.addressof`` needs it).
"""

from __future__ import annotations

from typing import Any, Final

from OpenSSL._util import ffi, lib

__all__ = [
    "DATA_PATH_FUNCTIONS",
    "address",
    "data_path_pointers",
    "error_queue",
    "ffi",
    "lib",
    "original_lib",
]

#: The OpenSSL functions a compiled per-record data path calls (aiotls._speedups).
#: cryptography declares neither BIO_ctrl nor BIO_ctrl_pending; its wrapper of the macro
#: ``long BIO_get_mem_data(BIO *, char **)`` with NULL answers the bytes a memory BIO holds.
DATA_PATH_FUNCTIONS: Final = (
    "SSL_read",
    "SSL_write",
    "SSL_get_error",
    "ERR_clear_error",
    "BIO_write",
    "BIO_read",
    "BIO_get_mem_data",
)


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


def data_path_pointers() -> dict[str, int]:
    """Addresses of :data:`DATA_PATH_FUNCTIONS` in the OpenSSL cryptography links.

    For a compiled data path that calls the very OpenSSL the engine's ``SSL*`` lives in.
    The addresses are those of cffi's direct-call wrappers, which call the function with
    the same C signature; they stay valid for the life of the process.
    """
    compiled = original_lib()
    return {name: address(ffi.addressof(compiled, name)) for name in DATA_PATH_FUNCTIONS}
