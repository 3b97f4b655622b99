"""The access log: one JSON object per line and per connection, written when it ends.

Fields: ``time`` (when it was accepted, UTC), ``peer``, ``route``, ``backend``, ``sni``,
``alpn``, ``version``, ``cipher``, ``group``, ``ja4``, ``resumed``, ``client_cn``,
``bytes_in`` (client to backend), ``bytes_out``, ``handshake_ms``, ``duration`` (seconds),
``outcome`` (``ok``, ``handshake_failed``, ``handshake_timeout``, ``no_route``,
``forbidden``, ``limit``, ``backend_unavailable``, ``idle_timeout``, ``client_error``,
``backend_error``, ``drained``) and ``error`` (why, when it did not end well).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import IO, Any

__all__ = ["OUTCOMES", "AccessLog", "ja4"]

log = logging.getLogger("aiotls.proxy")

OUTCOMES = (
    "ok",
    "handshake_failed",
    "handshake_timeout",
    "no_route",
    "forbidden",
    "limit",
    "backend_unavailable",
    "idle_timeout",
    "client_error",
    "backend_error",
    "drained",
)


def ja4(tls: Any) -> str | None:
    """The JA4 fingerprint of the client's ClientHello (a TLSTransport or its TLSSocket),
    kept by the proxy's on_client_hello; None without one (no ClientHello callback in
    this OpenSSL build, or no access log to write it to)."""
    hello = getattr(tls, "client_hello", None)
    return None if hello is None else str(hello.ja4)


class AccessLog:
    """Writes records to stdout (``"-"``) or appends them to a file; :meth:`reopen`
    after a log rotation moved the file away (the proxy does on reload)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._file: IO[str] | None = None
        self._failed = False
        self.reopen()

    def reopen(self) -> None:
        if self.target == "-":
            self._file = sys.stdout
            return
        old, self._file = self._file, open(self.target, "a", encoding="utf-8")  # noqa: SIM115
        if old is not None:
            old.close()

    def write(self, record: dict[str, Any]) -> None:
        """One line; a log that cannot be written is reported once, never fatal."""
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(record, separators=(", ", ": ")) + "\n")
            self._file.flush()
        except (OSError, ValueError) as exc:
            if not self._failed:
                log.error("access log %s: cannot write: %s", self.target, exc)
            self._failed = True
        else:
            self._failed = False

    def close(self) -> None:
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
        self._file = None
