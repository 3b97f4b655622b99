"""The data path in use: the compiled ``aiotls._speedups`` when it was built and its
OpenSSL functions resolve, else the pure-Python ``aiotls._openssl.datapath`` of the same
behaviour. ``AIOTLS_NO_EXTENSIONS=1`` (read at import) forces the fallback.

Build one per established connection::

    DataPath(*engine.raw_addresses(), openssl_functions(), protocol, raw.write, engine)

and put the :class:`RawProtocol` of the same implementation on the socket transport.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from . import datapath as _datapath
from .datapath import CLOSE_NOTIFY, ERROR, PAUSED, error_reasons
from .fnptrs import openssl_functions

if TYPE_CHECKING:
    from typing import TypeAlias

    from .. import _speedups

    #: Either implementation, for annotations.
    AnyDataPath: TypeAlias = _datapath.DataPath | _speedups.DataPath
    AnyRawProtocol: TypeAlias = _datapath.RawProtocol | _speedups.RawProtocol

__all__ = [
    "CLOSE_NOTIFY",
    "COMPILED",
    "ERROR",
    "NO_EXTENSIONS",
    "PAUSED",
    "DataPath",
    "RawProtocol",
    "error_reasons",
    "openssl_functions",
]

log = logging.getLogger("aiotls")

#: AIOTLS_NO_EXTENSIONS set (to anything but "" or "0"): the fallback, whatever was built.
NO_EXTENSIONS = os.environ.get("AIOTLS_NO_EXTENSIONS", "") not in ("", "0")


def _select() -> tuple[Any, Any, bool]:
    """The DataPath and RawProtocol classes to use, and whether they are the compiled ones."""
    fallback = _datapath.DataPath, _datapath.RawProtocol, False
    if NO_EXTENSIONS:
        return fallback
    try:
        from .. import _speedups
    except ImportError as exc:  # installed without a compiler or Cython
        log.debug("aiotls: the pure-Python data path (aiotls._speedups not built: %s)", exc)
        return fallback
    try:
        openssl_functions()
    except LookupError as exc:
        log.warning("aiotls: the pure-Python data path (OpenSSL's functions: %s)", exc)
        return fallback
    return _speedups.DataPath, _speedups.RawProtocol, True


_classes = _select()
DataPath: type[_datapath.DataPath] | type[_speedups.DataPath] = _classes[0]
RawProtocol: type[_datapath.RawProtocol] | type[_speedups.RawProtocol] = _classes[1]
COMPILED: bool = _classes[2]
