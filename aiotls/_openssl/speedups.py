"""The data path in use: the compiled ``aiotls._speedups`` when it was built and its
OpenSSL functions resolve, else the pure-Python ``aiotls._openssl.datapath`` of the same
behaviour. ``AIOTLS_NO_EXTENSIONS=1`` (read at import) forces the fallback.

Build one per established connection::

    DataPath(*engine.raw_addresses(), openssl_functions(), protocol, raw.write, engine)
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from . import datapath as _datapath
from .datapath import CLOSE_NOTIFY, ERROR, PAUSED, error_reasons
from .fnptrs import openssl_functions

if TYPE_CHECKING:
    from typing import TypeAlias

    from .. import _speedups

    #: Either implementation, for annotations.
    AnyDataPath: TypeAlias = _datapath.DataPath | _speedups.DataPath

__all__ = [
    "CLOSE_NOTIFY",
    "COMPILED",
    "ERROR",
    "NO_EXTENSIONS",
    "PAUSED",
    "DataPath",
    "error_reasons",
    "openssl_functions",
]

log = logging.getLogger("aiotls")

#: AIOTLS_NO_EXTENSIONS set (to anything but "" or "0"): the fallback, whatever was built.
NO_EXTENSIONS = os.environ.get("AIOTLS_NO_EXTENSIONS", "") not in ("", "0")


def _select() -> tuple[type[_datapath.DataPath] | type[_speedups.DataPath], bool]:
    """The DataPath class to use, and whether it is the compiled one."""
    if NO_EXTENSIONS:
        return _datapath.DataPath, False
    try:
        from .. import _speedups
    except ImportError as exc:  # installed without a compiler or Cython
        log.debug("aiotls: the pure-Python data path (aiotls._speedups not built: %s)", exc)
        return _datapath.DataPath, False
    try:
        openssl_functions()
    except LookupError as exc:
        log.warning("aiotls: the pure-Python data path (OpenSSL's functions: %s)", exc)
        return _datapath.DataPath, False
    return _speedups.DataPath, True


DataPath, COMPILED = _select()
