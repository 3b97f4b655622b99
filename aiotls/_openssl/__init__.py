"""The OpenSSL floor: the only code in aiotls that touches cffi, cryptography's ``lib``,
or pyOpenSSL and cryptography internals. A pyOpenSSL or cryptography upgrade can break
only this folder (pyproject.toml pins the versions it was checked against).

* :mod:`.binding` -- ``ffi``/``lib`` and the error queue; :mod:`.fnptrs` -- the
  OpenSSL function pointers of the compiled data path (:func:`openssl_functions`).
* :mod:`.extended` -- OpenSSL functions cryptography's bindings leave out, found in the
  wheel's symbol table; :func:`features` says which are available.
* :mod:`.callbacks` -- every C callback, each reaching the connection's owner through
  :class:`ConnectionCallbacks`.
* :mod:`.connection` -- :class:`SSLConnection`, one ``SSL*`` and its memory BIOs.
* :mod:`.context` -- what building a SecureContext needs beyond pyOpenSSL's API.
"""

from __future__ import annotations

from .callbacks import ConnectionCallbacks, alpn_offsets
from .connection import SSLConnection
from .extended import TICKET_KEYS_LENGTH, features, has, require
from .fnptrs import openssl_functions

__all__ = [
    "TICKET_KEYS_LENGTH",
    "ConnectionCallbacks",
    "SSLConnection",
    "alpn_offsets",
    "features",
    "has",
    "openssl_functions",
    "require",
]
