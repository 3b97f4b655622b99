"""A minimal DER reader: enough to walk an SSL_SESSION or DH parameters, nothing more."""

from __future__ import annotations

import base64

__all__ = ["items", "pem_body"]


def items(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[int, int, int]]:
    """(tag, content start, content end) of each DER element in data[start:end]."""
    end = len(data) if end is None else end
    found = []
    while start < end:
        tag, length = data[start], data[start + 1]
        start += 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(data[start : start + n], "big")
            start += n
        if start + length > end:
            raise ValueError("truncated DER element")
        found.append((tag, start, start + length))
        start += length
    return found


def pem_body(pem: bytes) -> bytes:
    """The DER inside the first PEM block."""
    lines = pem.strip().splitlines()
    body = []
    inside = False
    for line in lines:
        if line.startswith(b"-----BEGIN"):
            inside = True
        elif line.startswith(b"-----END"):
            break
        elif inside:
            body.append(line.strip())
    return base64.b64decode(b"".join(body), validate=True)
