"""OCSP client helpers: build a request, fetch a response over HTTP, verify it.

These are the pieces a TLS server needs to staple (``on_ocsp_request`` returns
the DER bytes of :func:`fetch`) and a client needs to judge a stapled response
(``on_ocsp_response`` hands it bytes for :func:`verify`)::

    der = await aiotls.ocsp.fetch(cert, issuer)          # POST to the AIA OCSP URL
    status = aiotls.ocsp.verify(der, cert, issuer)       # raises OCSPError if not trustworthy
    if status.status == "revoked": ...

Built on ``cryptography``'s :mod:`cryptography.x509.ocsp` and asyncio only.
Requests carry no nonce (most public responders ignore or refuse nonces and
serve pre-signed responses); freshness comes from thisUpdate/nextUpdate and the
optional ``max_age``. Only plain ``http://`` responders are fetched, as RFC 6960
responders almost always are.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    SignatureAlgorithmOID,
)

__all__ = [
    "OCSPError",
    "OCSPStatus",
    "OCSPTimeoutError",
    "build_request",
    "fetch",
    "responder_urls",
    "verify",
]

#: How far in the future thisUpdate may lie (clock skew between hosts).
CLOCK_SKEW = datetime.timedelta(minutes=5)
#: Largest OCSP HTTP response body :func:`fetch` accepts.
MAX_RESPONSE_SIZE = 1 << 20
_MAX_HEADER_LINES = 100
_SHA1 = hashes.SHA1()

CertStatus = Literal["good", "revoked", "unknown"]
_STATUS_NAMES: dict[ocsp.OCSPCertStatus, CertStatus] = {
    ocsp.OCSPCertStatus.GOOD: "good",
    ocsp.OCSPCertStatus.REVOKED: "revoked",
    ocsp.OCSPCertStatus.UNKNOWN: "unknown",
}


class OCSPError(Exception):
    """An OCSP response could not be fetched, or failed a check in :func:`verify`."""


class OCSPTimeoutError(OCSPError, TimeoutError):
    """:func:`fetch` did not finish within its timeout (also a :class:`TimeoutError`)."""


@dataclass(frozen=True)
class OCSPStatus:
    """The verified status of one certificate, as its OCSP responder stated it.

    Times are timezone-aware UTC datetimes. ``revocation_time`` and
    ``revocation_reason`` are set only for ``"revoked"`` (the reason may be
    None even then: it is optional in the response).
    """

    status: CertStatus
    this_update: datetime.datetime
    next_update: datetime.datetime | None
    revocation_time: datetime.datetime | None
    revocation_reason: x509.ReasonFlags | None
    produced_at: datetime.datetime


# --------------------------------------------------------------------------- request


def build_request(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    hash_algorithm: hashes.HashAlgorithm = _SHA1,
) -> bytes:
    """The DER-encoded OCSPRequest asking about ``cert`` (issued by ``issuer``).

    ``hash_algorithm`` hashes the issuer name and key in the CertID; SHA-1 (the
    default) is what every responder understands; SHA-224/256/384/512 also work.
    """
    try:
        builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hash_algorithm)
    except ValueError as exc:
        raise ValueError(f"hash_algorithm: {exc}") from None
    return builder.build().public_bytes(serialization.Encoding.DER)


def responder_urls(cert: x509.Certificate) -> list[str]:
    """The OCSP responder URLs in ``cert``'s Authority Information Access extension."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        desc.access_location.value
        for desc in aia
        if desc.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(desc.access_location, x509.UniformResourceIdentifier)
    ]


# --------------------------------------------------------------------------- fetch


def _parse_url(url: str) -> tuple[str, int, str, str]:
    """``(host, port, request-target, Host header)`` of an ``http://`` URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https":
        raise ValueError(
            f"url: OCSP over https is not supported ({url!r}); responders are plain http"
        )
    if scheme != "http":
        raise ValueError(f"url: expected an http:// OCSP responder URL, got {url!r}")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"url: bad port in {url!r}") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"url: no host in {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != 80:
        host_header += f":{parts.port}"
    return host, port, target, host_header


async def _read_headers(reader: asyncio.StreamReader, url: str) -> dict[str, str]:
    """Header fields up to the blank line, names lower-cased (repeats joined by ", ")."""
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADER_LINES):
        line = await reader.readline()
        if not line:
            raise OCSPError(f"OCSP responder {url} closed the connection inside the headers")
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            return headers
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            raise OCSPError(f"OCSP responder {url} sent a malformed header line {text!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    raise OCSPError(f"OCSP responder {url} sent too many header lines")


async def _read_status(reader: asyncio.StreamReader, url: str) -> tuple[int, str]:
    line = await reader.readline()
    if not line:
        raise OCSPError(f"OCSP responder {url} closed the connection without an answer")
    text = line.decode("latin-1").rstrip("\r\n")
    version, _, rest = text.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
        raise OCSPError(f"OCSP responder {url} did not answer with HTTP: {text[:80]!r}")
    return int(code), reason.strip()


async def _read_chunked(reader: asyncio.StreamReader, url: str) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readline()
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise OCSPError(f"OCSP responder {url} sent a bad chunk size {line[:40]!r}") from None
        if size == 0:
            await _read_headers(reader, url)  # trailers
            return bytes(body)
        if len(body) + size > MAX_RESPONSE_SIZE:
            raise OCSPError(f"OCSP response from {url} exceeds {MAX_RESPONSE_SIZE} bytes")
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # CRLF after the chunk


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], url: str) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader, url)
    length_text = headers.get("content-length")
    if length_text is not None:
        try:
            length = int(length_text.split(",")[0].strip())
        except ValueError:
            raise OCSPError(f"OCSP responder {url} sent Content-Length {length_text!r}") from None
        if length < 0 or length > MAX_RESPONSE_SIZE:
            raise OCSPError(f"OCSP response from {url} is {length} bytes; too large or invalid")
        return await reader.readexactly(length)
    body = await reader.read(MAX_RESPONSE_SIZE + 1)  # read to EOF
    while chunk := await reader.read(MAX_RESPONSE_SIZE + 1 - len(body)):
        body += chunk
        if len(body) > MAX_RESPONSE_SIZE:
            break
    if len(body) > MAX_RESPONSE_SIZE:
        raise OCSPError(f"OCSP response from {url} exceeds {MAX_RESPONSE_SIZE} bytes")
    return body


async def _exchange(host: str, port: int, request: bytes, url: str) -> bytes:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        raise OCSPError(f"cannot connect to OCSP responder {url}: {exc}") from exc
    try:
        writer.write(request)
        await writer.drain()
        code, reason = await _read_status(reader, url)
        while 100 <= code < 200:  # interim answers (100 Continue): skip
            await _read_headers(reader, url)
            code, reason = await _read_status(reader, url)
        headers = await _read_headers(reader, url)
        if code != 200:
            raise OCSPError(f"OCSP responder {url} answered HTTP {code} {reason}".rstrip())
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type and content_type != "application/ocsp-response":
            raise OCSPError(
                f"OCSP responder {url} answered with Content-Type {content_type!r}, "
                "not application/ocsp-response"
            )
        return await _read_body(reader, headers, url)
    except asyncio.IncompleteReadError as exc:
        raise OCSPError(f"OCSP responder {url} closed the connection mid-response") from exc
    except asyncio.LimitOverrunError as exc:
        raise OCSPError(f"OCSP responder {url} sent an overlong line") from exc
    except ValueError as exc:  # StreamReader.readline on an overlong line
        raise OCSPError(f"OCSP responder {url} sent a malformed response: {exc}") from exc
    except ConnectionError as exc:
        raise OCSPError(f"connection to OCSP responder {url} failed: {exc}") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def fetch(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    url: str | None = None,
    timeout: float = 10.0,
) -> bytes:
    """Ask ``cert``'s OCSP responder about it; returns the DER OCSPResponse.

    POSTs :func:`build_request` to ``url``, or else to the first OCSP URL of the
    certificate's AIA extension, over HTTP/1.1 (``Connection: close``) with
    ``asyncio.open_connection``. The whole exchange (connect, send, read) is
    bounded by ``timeout`` seconds and never blocks the event loop.

    The response is only checked to be an OCSP response, not verified: pass it
    to :func:`verify`. Raises ValueError for an https or otherwise unusable URL,
    :class:`OCSPTimeoutError` on timeout, and :class:`OCSPError` when there is no
    URL, the connection fails, the HTTP status is not 200, the Content-Type is
    not ``application/ocsp-response`` or the body is not an OCSP response.
    """
    if not timeout > 0:
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    if url is None:
        urls = responder_urls(cert)
        if not urls:
            raise OCSPError("certificate has no OCSP responder URL (no AIA OCSP entry); pass url=")
        url = urls[0]
    host, port, target, host_header = _parse_url(url)
    body = build_request(cert, issuer)
    head = (
        f"POST {target} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        "Content-Type: application/ocsp-request\r\n"
        "Accept: application/ocsp-response\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "User-Agent: aiotls\r\n"
        "\r\n"
    )
    try:
        async with asyncio.timeout(timeout):
            data = await _exchange(host, port, head.encode("latin-1") + body, url)
    except TimeoutError:
        raise OCSPTimeoutError(
            f"OCSP responder {url} did not answer within {timeout:g} s"
        ) from None
    try:
        ocsp.load_der_ocsp_response(data)
    except ValueError:
        raise OCSPError(
            f"OCSP responder {url} sent {len(data)} bytes that are not an OCSP response"
        ) from None
    return data


# --------------------------------------------------------------------------- verify


def _aware(when: datetime.datetime) -> datetime.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


# DER-encoded OID contents of the hashes RSASSA-PSS parameters may name.
_PSS_HASHES: dict[bytes, type[hashes.HashAlgorithm]] = {
    bytes.fromhex("2b0e03021a"): hashes.SHA1,
    bytes.fromhex("608648016503040204"): hashes.SHA224,
    bytes.fromhex("608648016503040201"): hashes.SHA256,
    bytes.fromhex("608648016503040202"): hashes.SHA384,
    bytes.fromhex("608648016503040203"): hashes.SHA512,
}
_MGF1_OID = bytes.fromhex("2a864886f70d010108")


def _der_read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER TLV at ``pos``: ``(tag, contents, position after it)``; definite lengths only."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos : pos + length], pos + length


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """The ``(tag, contents)`` TLVs laid end to end in ``data``."""
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        tag, contents, pos = _der_read(data, pos)
        items.append((tag, contents))
    return items


def _pss_hash(response_der: bytes, tbs: bytes) -> hashes.HashAlgorithm:
    """The hash of an RSASSA-PSS signed response, read from its signatureAlgorithm params.

    cryptography does not expose OCSP signature parameters, so the
    AlgorithmIdentifier that follows tbsResponseData in the DER is decoded here.
    The MGF1 hash must be the same as the message hash (as everyone signs).
    """
    start = response_der.find(tbs)
    if start < 0:
        raise ValueError("tbsResponseData not found")
    tag, algorithm_id, _ = _der_read(response_der, start + len(tbs))
    if tag != 0x30:
        raise ValueError("no signatureAlgorithm")
    fields = _der_items(algorithm_id)
    params = _der_items(fields[1][1]) if len(fields) > 1 and fields[1][0] == 0x30 else []
    digest: type[hashes.HashAlgorithm] = hashes.SHA1  # RFC 4055 defaults
    mgf_digest: type[hashes.HashAlgorithm] = hashes.SHA1
    for field_tag, contents in params:
        if field_tag == 0xA0:  # [0] hashAlgorithm
            digest = _PSS_HASHES[_der_items(_der_items(contents)[0][1])[0][1]]
        elif field_tag == 0xA1:  # [1] maskGenAlgorithm: mgf1 with a hash AlgorithmIdentifier
            mgf = _der_items(_der_items(contents)[0][1])
            if mgf[0][1] != _MGF1_OID:
                raise ValueError("mask generation function is not MGF1")
            mgf_digest = _PSS_HASHES[_der_items(mgf[1][1])[0][1]]
    if digest is not mgf_digest:
        raise ValueError("PSS with different message and MGF1 hashes")
    return digest()


def _verify_signature(
    public_key: object, response: ocsp.OCSPResponse, response_der: bytes, who: str
) -> None:
    """Check the response's signature with ``public_key``; OCSPError if it does not hold."""
    data, signature = response.tbs_response_bytes, response.signature
    oid = response.signature_algorithm_oid
    pss = oid == SignatureAlgorithmOID.RSASSA_PSS
    algorithm: hashes.HashAlgorithm | None
    try:
        algorithm = _pss_hash(response_der, data) if pss else response.signature_hash_algorithm
    except (UnsupportedAlgorithm, ValueError, KeyError, IndexError):
        raise OCSPError(
            f"OCSP response signature algorithm {oid.dotted_string} (or its parameters) "
            "is not supported"
        ) from None
    try:
        if isinstance(public_key, rsa.RSAPublicKey) and algorithm is not None:
            if pss:
                pad: padding.AsymmetricPadding = padding.PSS(
                    mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO
                )
            else:
                pad = padding.PKCS1v15()
            public_key.verify(signature, data, pad, algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and algorithm is not None:
            public_key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(signature, data)
        elif isinstance(public_key, dsa.DSAPublicKey) and algorithm is not None:
            public_key.verify(signature, data, algorithm)
        else:
            raise OCSPError(
                f"OCSP response signature ({oid.dotted_string}) does not fit the {who}'s key type"
            )
    except InvalidSignature:
        raise OCSPError(
            f"OCSP response signature is invalid (checked with the {who}'s key)"
        ) from None


def _matches_responder_id(response: ocsp.OCSPResponse, candidate: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return response.responder_name == candidate.subject
    key_hash = response.responder_key_hash
    return (
        key_hash is not None
        and x509.SubjectKeyIdentifier.from_public_key(candidate.public_key()).digest == key_hash
    )


def _check_delegate(
    delegate: x509.Certificate, issuer: x509.Certificate, now: datetime.datetime
) -> None:
    """A delegated responder: issued (signed) by ``issuer``, OCSPSigning EKU, valid ``now``."""
    subject = delegate.subject.rfc4514_string()
    try:
        delegate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise OCSPError(
            f"OCSP responder certificate {subject!r} is not issued by the certificate's issuer; "
            "it is not authorized to answer for it"
        ) from None
    try:
        eku = delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise OCSPError(
            f"OCSP responder certificate {subject!r} lacks the OCSPSigning extended key usage; "
            "it is not authorized to sign OCSP responses"
        )
    if not delegate.not_valid_before_utc <= now <= delegate.not_valid_after_utc:
        raise OCSPError(
            f"OCSP responder certificate {subject!r} is not valid now (valid "
            f"{delegate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} to "
            f"{delegate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC)"
        )


def _check_signer(
    response: ocsp.OCSPResponse,
    response_der: bytes,
    issuer: x509.Certificate,
    now: datetime.datetime,
) -> None:
    """The response is signed by ``issuer`` or by an authorized delegate it includes."""
    if _matches_responder_id(response, issuer):
        _verify_signature(issuer.public_key(), response, response_der, "issuer")
        return
    delegates = [c for c in response.certificates if _matches_responder_id(response, c)]
    if not delegates:
        raise OCSPError(
            "OCSP response is signed neither by the certificate's issuer nor by a responder "
            "certificate included in the response"
        )
    first_error: OCSPError | None = None
    for delegate in delegates:
        try:
            _check_delegate(delegate, issuer, now)
            _verify_signature(delegate.public_key(), response, response_der, "delegated responder")
        except OCSPError as exc:
            first_error = first_error or exc
            continue
        return
    assert first_error is not None
    raise first_error


def _single_for(
    response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    """The SingleResponse whose CertID names ``cert`` (serial, issuer name and key hash)."""
    ids: dict[str, tuple[bytes, bytes]] = {}
    serials: list[int] = []
    other_issuer = False
    for single in response.responses:
        serials.append(single.serial_number)
        if single.serial_number != cert.serial_number:
            continue
        try:
            algorithm = single.hash_algorithm
        except UnsupportedAlgorithm:
            continue  # a CertID hash we cannot compute cannot be matched
        if algorithm.name not in ids:
            try:
                request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
            except ValueError:
                continue  # a CertID hash we cannot compute cannot be matched
            ids[algorithm.name] = (request.issuer_name_hash, request.issuer_key_hash)
        if (single.issuer_name_hash, single.issuer_key_hash) == ids[algorithm.name]:
            return single
        other_issuer = True
    if other_issuer:
        raise OCSPError(
            f"OCSP response names serial {cert.serial_number:#x} but for a different issuer "
            "(issuer name/key hash mismatch)"
        )
    listed = ", ".join(f"{s:#x}" for s in serials[:5]) or "none"
    if len(serials) > 5:
        listed += f" and {len(serials) - 5} more"
    raise OCSPError(
        f"OCSP response is not for this certificate: wanted serial {cert.serial_number:#x}, "
        f"response covers {listed}"
    )


def verify(
    response_der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    now: datetime.datetime | None = None,
    max_age: datetime.timedelta | None = None,
) -> OCSPStatus:
    """Check a DER OCSP response about ``cert`` and return its :class:`OCSPStatus`.

    Checks, each failure raising :class:`OCSPError` with the reason:

    - it parses and its responseStatus is ``successful``;
    - ``cert`` was signed by ``issuer``, and one SingleResponse's CertID matches
      ``cert`` (serial number, issuer name hash, issuer key hash);
    - the signature is valid and made by ``issuer`` itself, or by a delegated
      responder certificate included in the response that ``issuer`` signed,
      that has the OCSPSigning extended key usage and is valid at ``now``;
    - thisUpdate is not in the future (:data:`CLOCK_SKEW`, five
      minutes, allowed), nextUpdate (when present) is not in the past, and, if
      ``max_age`` is given, thisUpdate is no older than ``max_age``.

    ``now`` defaults to the current time (a naive datetime is taken as UTC).
    A ``"revoked"`` or ``"unknown"`` status is returned, not raised: the caller
    decides what to do with it.
    """
    now = _aware(now) if now is not None else datetime.datetime.now(datetime.UTC)
    try:
        response_der = bytes(response_der)
        response = ocsp.load_der_ocsp_response(response_der)
    except ValueError as exc:
        raise OCSPError(f"malformed OCSP response: {exc}") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OCSPError(
            f"OCSP responder did not answer: response status {response.response_status.name}"
        )
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise OCSPError(
            f"issuer {issuer.subject.rfc4514_string()!r} did not issue the certificate "
            f"{cert.subject.rfc4514_string()!r}"
        ) from None

    single = _single_for(response, cert, issuer)
    _check_signer(response, response_der, issuer, now)

    this_update = single.this_update_utc
    next_update = single.next_update_utc
    produced_at = response.produced_at_utc
    if this_update > now + CLOCK_SKEW:
        raise OCSPError(
            f"OCSP response thisUpdate {this_update:%Y-%m-%d %H:%M:%S} UTC is in the future"
        )
    if next_update is not None and next_update < now:
        raise OCSPError(
            f"OCSP response is stale: nextUpdate {next_update:%Y-%m-%d %H:%M:%S} UTC has passed"
        )
    if next_update is not None and next_update < this_update:
        raise OCSPError("OCSP response nextUpdate is before its thisUpdate")
    if max_age is not None and now - this_update > max_age:
        raise OCSPError(
            f"OCSP response is too old: thisUpdate {this_update:%Y-%m-%d %H:%M:%S} UTC "
            f"is more than {max_age} ago"
        )

    status = _STATUS_NAMES[single.certificate_status]
    revoked = status == "revoked"
    return OCSPStatus(
        status=status,
        this_update=this_update,
        next_update=next_update,
        revocation_time=single.revocation_time_utc if revoked else None,
        revocation_reason=single.revocation_reason if revoked else None,
        produced_at=produced_at,
    )
