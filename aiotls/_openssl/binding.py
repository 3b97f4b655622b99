"""cryptography's cffi binding as the floor uses it: ``ffi``, ``lib`` and the error queue
(the addresses a compiled caller needs are :mod:`.fnptrs`').

``lib`` is pyOpenSSL's filtered view of cryptography's compiled cffi library;
:func:`original_lib` is the unfiltered one (``ffi.addressof`` needs it).
"""

from __future__ import annotations

from typing import Any

from OpenSSL._util import ffi, lib

__all__ = [
    "address",
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
