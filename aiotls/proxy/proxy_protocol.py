"""PROXY protocol version 2 headers (HAProxy's binary format), sent to a backend before
the client's first byte so that it learns who the client is and what TLS settled.

The header carries the client's and the proxy's addresses (TCP over IPv4 or IPv6;
other families go as UNSPEC, which receivers treat as "use the real endpoints") and
these TLVs: ``PP2_TYPE_ALPN``, ``PP2_TYPE_AUTHORITY`` (the SNI), and ``PP2_TYPE_SSL``
with the client flags, the verify result and the sub-TLVs ``VERSION`` ("TLSv1.3"),
``CIPHER`` (OpenSSL's name) and ``CN`` (the client certificate's subject CN).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = ["TLSFacts", "encode_v2"]

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_VERSION_PROXY = 0x21  # version 2, command PROXY
_TCP4, _TCP6, _UNSPEC = 0x11, 0x21, 0x00

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04


@dataclass(frozen=True, slots=True)
class TLSFacts:
    """What the header reports about the TLS side of a connection."""

    version: str | None
    cipher: str | None
    servername: str | None
    alpn: str | None
    client_cn: str | None
    #: The client sent a certificate (on this connection, or in the resumed session).
    client_cert: bool
    #: That certificate verified.
    verified: bool
    resumed: bool


def _tlv(kind: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"PROXY v2 TLV {kind:#x} too long ({len(value)} bytes)")
    return struct.pack("!BH", kind, len(value)) + value


def _ssl_tlv(tls: TLSFacts) -> bytes:
    client = PP2_CLIENT_SSL
    if tls.client_cert:
        client |= PP2_CLIENT_CERT_SESS if tls.resumed else PP2_CLIENT_CERT_CONN
    verify = 0 if tls.client_cert and tls.verified else 1  # the spec: 0 means verified
    subs = b""
    for kind, text in (
        (PP2_SUBTYPE_SSL_VERSION, tls.version),
        (PP2_SUBTYPE_SSL_CN, tls.client_cn),
        (PP2_SUBTYPE_SSL_CIPHER, tls.cipher),
    ):
        if text:
            subs += _tlv(kind, text.encode())
    return _tlv(PP2_TYPE_SSL, struct.pack("!BI", client, verify) + subs)


def _addresses(source: object, dest: object) -> tuple[int, bytes]:
    """The family byte and address block for two socket names (UNSPEC unless both are
    IP addresses of the same family)."""
    if not (isinstance(source, tuple) and isinstance(dest, tuple)):
        return _UNSPEC, b""
    try:
        src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(dest[0])
    except ValueError:
        return _UNSPEC, b""
    if src.version != dst.version:
        return _UNSPEC, b""
    family = _TCP4 if src.version == 4 else _TCP6
    return family, src.packed + dst.packed + struct.pack("!HH", source[1], dest[1])


def encode_v2(source: object, dest: object, tls: TLSFacts) -> bytes:
    """The header for a client at ``source`` that reached the proxy at ``dest`` (socket
    names as asyncio reports ``peername`` and ``sockname``)."""
    family, addresses = _addresses(source, dest)
    tlvs = b""
    if tls.alpn:
        tlvs += _tlv(PP2_TYPE_ALPN, tls.alpn.encode())
    if tls.servername:
        tlvs += _tlv(PP2_TYPE_AUTHORITY, tls.servername.encode())
    tlvs += _ssl_tlv(tls)
    body = addresses + tlvs
    return SIGNATURE + struct.pack("!BBH", _VERSION_PROXY, family, len(body)) + body
