"""Peer certificates as Node's and the stdlib's dicts, and Node's hostname check.

Pure functions over ``cryptography`` objects. The formats follow what node 20 (OpenSSL 3)
and CPython's ``_ssl`` print for the same certificate; the tests compare them with both.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import itertools
import json
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import AuthorityInformationAccessOID, PublicKeyAlgorithmOID

from .errors import TLSCertificateError

__all__ = ["check_server_identity", "node_certificate", "stdlib_peercert"]

# OpenSSL's names of attribute types: dotted OID -> (short name, long name).
_X520 = {
    3: ("CN", "commonName"), 4: ("SN", "surname"), 5: ("serialNumber",), 6: ("C", "countryName"),
    7: ("L", "localityName"), 8: ("ST", "stateOrProvinceName"), 9: ("street", "streetAddress"),
    10: ("O", "organizationName"), 11: ("OU", "organizationalUnitName"), 12: ("title",),
    13: ("description",), 15: ("businessCategory",), 16: ("postalAddress",),
    17: ("postalCode",), 18: ("postOfficeBox",), 20: ("telephoneNumber",), 41: ("name",),
    42: ("GN", "givenName"), 43: ("initials",), 44: ("generationQualifier",),
    45: ("x500UniqueIdentifier",), 46: ("dnQualifier",), 65: ("pseudonym",), 72: ("role",),
    97: ("organizationIdentifier",),
}  # fmt: skip
_OID_NAMES: dict[str, tuple[str, ...]] = {
    **{f"2.5.4.{n}": names for n, names in _X520.items()},
    "1.2.840.113549.1.9.1": ("emailAddress",),
    "1.2.840.113549.1.9.2": ("unstructuredName",),
    "0.9.2342.19200300.100.1.1": ("UID", "userId"),
    "0.9.2342.19200300.100.1.3": ("mail", "rfc822Mailbox"),
    "0.9.2342.19200300.100.1.25": ("DC", "domainComponent"),
    "1.3.6.1.4.1.311.60.2.1.1": ("jurisdictionL", "jurisdictionLocalityName"),
    "1.3.6.1.4.1.311.60.2.1.2": ("jurisdictionST", "jurisdictionStateOrProvinceName"),
    "1.3.6.1.4.1.311.60.2.1.3": ("jurisdictionC", "jurisdictionCountryName"),
    "1.3.6.1.5.5.7.48.1": ("OCSP",),
    "1.3.6.1.5.5.7.48.2": ("caIssuers", "CA Issuers"),
    "1.3.6.1.5.5.7.48.3": ("ad_timestamping", "AD Time Stamping"),
    "1.3.6.1.5.5.7.48.5": ("caRepository", "CA Repository"),
}
# Other names node and OpenSSL 3.0 print (and whether the value is a UTF8String).
_OTHER_NAMES = {
    "1.3.6.1.5.5.7.8.9": ("SmtpUTF8Mailbox", True),
    "1.3.6.1.5.5.7.8.5": ("XmppAddr", True),
    "1.3.6.1.5.5.7.8.7": ("SRVName", False),
    "1.3.6.1.4.1.311.20.2.3": ("UPN", True),
    "1.3.6.1.5.5.7.8.8": ("NAIRealm", True),
}
_NIST_CURVES = {"secp192r1": "P-192", "secp224r1": "P-224", "secp256r1": "P-256",
                "secp384r1": "P-384", "secp521r1": "P-521"}  # fmt: skip
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ENCODINGS = {_ASN1Type.UTF8String: "utf-8", _ASN1Type.BMPString: "utf-16-be",
              _ASN1Type.UniversalString: "utf-32-be"}  # fmt: skip

_E = TypeVar("_E", bound=x509.ExtensionType)


def _short(oid: x509.ObjectIdentifier) -> str:
    names = _OID_NAMES.get(oid.dotted_string)
    return names[0] if names else oid.dotted_string


def _long(oid: x509.ObjectIdentifier) -> str:
    names = _OID_NAMES.get(oid.dotted_string)
    return names[-1] if names else oid.dotted_string


def _ext(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return None  # extensions cryptography cannot parse: treated as absent


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("latin-1")


def _asn1_time(t: datetime.datetime) -> str:
    """OpenSSL's ASN1_TIME_print, which node and CPython both use."""
    return f"{_MONTHS[t.month - 1]} {t.day:2d} {t:%H:%M:%S} {t.year} GMT"


def _hex_bytes(n: int) -> str:
    digits = f"{abs(n):X}"
    return ("-" if n < 0 else "") + ("0" * (len(digits) % 2)) + digits


# --- Node's getPeerCertificate() -----------------------------------------------------------


def _alt_name(data: bytes, utf8: bool = False, prefix: str = "") -> bytes:
    """node's PrintAltName: as is when "safe", else a JSON string literal (commas escaped)."""
    unsafe = b"\"\\,'"
    if not any(c in unsafe or c < 0x20 or c == 0x7F or (c > 0x7E and not utf8) for c in data):
        return (f"{prefix}:" if prefix else "").encode() + data
    out = bytearray(b'"' + (f"{prefix}:" if prefix else "").encode())
    for c in data:
        if c in b'\\"':
            out += b"\\" + bytes([c])
        elif (0x20 <= c <= 0x7E and c != 0x2C) or (utf8 and c & 0x80):
            out.append(c)
        else:
            out += b"\\u00%02x" % c
    return bytes(out + b'"')


def _rfc2253_value(attr: x509.NameAttribute[Any]) -> bytes:
    if attr.oid.dotted_string not in _OID_NAMES:  # an unknown type: "#" and its DER in hex
        data = _text(attr.value).encode(_ENCODINGS.get(attr._type, "latin-1"), "replace")
        size = len(data).to_bytes(4, "big").lstrip(b"\0")
        head = bytes([0x80 | len(size)]) + size if len(data) > 127 else bytes([len(data)])
        return b"#" + (bytes([attr._type.value]) + head + data).hex().upper().encode()
    data = _text(attr.value).encode()
    last = len(data) - 1
    return b"".join(
        b"\\%c" % c if c in b'"+,;<>\\' or (i == 0 and c in b"# ") or (i == last and c == 32)
        else bytes([c])
        for i, c in enumerate(data)
    )  # fmt: skip


def _rfc2253(name: x509.Name) -> bytes:
    """X509_NAME_print_ex with node's flags (RFC 2253, but UTF-8 and controls kept as is)."""
    return b",".join(
        b"+".join(_short(a.oid).encode() + b"=" + _rfc2253_value(a) for a in reversed(list(rdn)))
        for rdn in reversed(name.rdns)
    )


def _der_string(der: bytes) -> tuple[int, bytes]:
    """(tag, content) of a DER TLV."""
    size, start = der[1], 2
    if size & 0x80:
        start += size & 0x7F
        size = int.from_bytes(der[2:start], "big")
    return der[0], der[start : start + size]


def _ip_text(gn: x509.IPAddress, invalid: str) -> str:
    """An IP altname as node and CPython print it: IPv6 as eight upper-case hex groups."""
    value = gn.value
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):  # 8 or 32 bytes
        return invalid.format(2 * len(value.network_address.packed))
    if isinstance(value, ipaddress.IPv4Address):
        return str(value)
    return ":".join(f"{int.from_bytes(value.packed[i : i + 2], 'big'):X}" for i in range(0, 16, 2))


def _node_general_name(gn: x509.GeneralName) -> bytes:
    """node 20's PrintGeneralName."""
    if isinstance(gn, x509.DNSName | x509.RFC822Name | x509.UniformResourceIdentifier):
        kind = {x509.DNSName: "DNS", x509.RFC822Name: "email"}.get(type(gn), "URI")
        return f"{kind}:".encode() + _alt_name(gn.value.encode("latin-1", "replace"))
    if isinstance(gn, x509.IPAddress):
        return b"IP Address:" + _ip_text(gn, "<invalid length={}>").encode()
    if isinstance(gn, x509.RegisteredID):
        return b"Registered ID:" + gn.value.dotted_string.encode()
    if isinstance(gn, x509.DirectoryName):
        return b"DirName:" + _alt_name(_rfc2253(gn.value), utf8=True)
    if isinstance(gn, x509.OtherName):
        prefix, utf8 = _OTHER_NAMES.get(gn.type_id.dotted_string, ("", True))
        tag, value = _der_string(gn.value)
        if not prefix or tag != (0x0C if utf8 else 0x16):
            return b"othername:<unsupported>"
        return b"othername:" + _alt_name(value, utf8, prefix)
    raise TypeError(f"unsupported general name {gn!r}")  # pragma: no cover


def _info_access(aia: x509.AuthorityInformationAccess) -> dict[str, list[str]]:
    """node's infoAccess string, then translatePeerCertificate's parse of it."""
    text = b"\n".join(
        _long(d.access_method).encode() + b" - " + _node_general_name(d.access_location)
        for d in aia
    ).decode("utf-8", "replace")
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"([^\n:]*):([^\n]*)(?:\n|\Z)", text):
        key, val = m.groups()
        out.setdefault(key, []).append(json.loads(val) if val.startswith('"') else val)
    return out


def _name_object(name: x509.Name) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr in name:
        key, value = _short(attr.oid), _text(attr.value)
        if key not in out:
            out[key] = value
        elif isinstance(out[key], list):
            out[key].append(value)
        else:
            out[key] = [out[key], value]
    return out


def identity_fields(cert: x509.Certificate) -> dict[str, Any]:
    """Just the fields check_server_identity reads (subject, subjectaltname): the cheap
    path for the default check on every client handshake."""
    info: dict[str, Any] = {"subject": _name_object(cert.subject)}
    if (san := _ext(cert, x509.SubjectAlternativeName)) is not None:
        info["subjectaltname"] = b", ".join(map(_node_general_name, san)).decode("utf-8", "replace")
    return info


def _node_info(cert: x509.Certificate) -> dict[str, Any]:
    """node's X509ToObject plus translatePeerCertificate, keys in node's order."""
    ident = identity_fields(cert)
    info: dict[str, Any] = {"subject": ident["subject"], "issuer": _name_object(cert.issuer)}
    if "subjectaltname" in ident:
        info["subjectaltname"] = ident["subjectaltname"]
    if (aia := _ext(cert, x509.AuthorityInformationAccess)) is not None:
        info["infoAccess"] = _info_access(aia)
    bc, ku = _ext(cert, x509.BasicConstraints), _ext(cert, x509.KeyUsage)
    info["ca"] = bc is not None and bc.ca and (ku is None or ku.key_cert_sign)  # X509_check_ca
    try:
        key = cert.public_key()
    except (ValueError, TypeError):  # pragma: no cover - key type cryptography can't load
        key = None
    if isinstance(key, rsa.RSAPublicKey) and (
        cert.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSAES_PKCS1_v1_5
    ):
        nums = key.public_numbers()
        info["modulus"] = f"{nums.n:X}"
        info["bits"] = key.key_size
        info["exponent"] = f"0x{nums.e:x}"
        info["pubkey"] = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        curve = key.curve.name
        info["bits"] = key.curve.group_order.bit_length()
        info["pubkey"] = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        info["asn1Curve"] = {"secp256r1": "prime256v1", "secp192r1": "prime192v1"}.get(curve, curve)
        if curve in _NIST_CURVES:
            info["nistCurve"] = _NIST_CURVES[curve]
    info["valid_from"] = _asn1_time(cert.not_valid_before_utc)
    info["valid_to"] = _asn1_time(cert.not_valid_after_utc)
    raw = cert.public_bytes(serialization.Encoding.DER)
    for key_name, algo in (("", "sha1"), ("256", "sha256"), ("512", "sha512")):
        info[f"fingerprint{key_name}"] = hashlib.new(algo, raw).digest().hex(":").upper()
    if (eku := _ext(cert, x509.ExtendedKeyUsage)) is not None:
        info["ext_key_usage"] = [oid.dotted_string for oid in eku]
    info["serialNumber"] = _hex_bytes(cert.serial_number) if cert.serial_number else "0"
    info["raw"] = raw
    return info


def _issued(issuer: x509.Certificate, cert: x509.Certificate) -> bool:
    """A simplified X509_check_issued: names, key identifiers, keyCertSign."""
    if issuer.subject != cert.issuer:
        return False
    akid, skid = _ext(cert, x509.AuthorityKeyIdentifier), _ext(issuer, x509.SubjectKeyIdentifier)
    if akid is not None and akid.key_identifier and skid and akid.key_identifier != skid.digest:
        return False
    ku = _ext(issuer, x509.KeyUsage)
    return ku is None or ku.key_cert_sign


def node_certificate(
    cert: x509.Certificate, chain: Sequence[x509.Certificate] = (), *, detailed: bool = False
) -> dict[str, Any]:
    """The dict Node's ``tlsSocket.getPeerCertificate(detailed)`` returns for ``cert``.

    ``chain`` is the peer's chain (leaf first; a leading copy of ``cert`` is skipped). With
    ``detailed``, ``issuerCertificate`` links each certificate to its issuer found in ``chain``;
    a self-signed last certificate links to its own dict, as in Node.
    """
    info = _node_info(cert)
    if detailed:
        pool = list(chain[1:] if chain and chain[0] == cert else chain)
        node, current = info, cert
        while (issuer := next((c for c in pool if _issued(c, current)), None)) is not None:
            pool.remove(issuer)
            node["issuerCertificate"] = _node_info(issuer)
            node, current = node["issuerCertificate"], issuer
        if _issued(current, current):
            node["issuerCertificate"] = node
    return info


# --- The stdlib's getpeercert() ------------------------------------------------------------


def _rdn_tuples(name: x509.Name) -> tuple[tuple[tuple[str, str], ...], ...]:
    return tuple(tuple((_long(a.oid), _text(a.value)) for a in rdn) for rdn in name.rdns)


def _stdlib_general_name(gn: x509.GeneralName) -> tuple[str, Any]:
    """CPython's _get_peer_alt_names entry for one name."""
    if isinstance(gn, x509.DirectoryName):
        return ("DirName", _rdn_tuples(gn.value))
    if isinstance(gn, x509.OtherName):  # GENERAL_NAME_print split at the first colon
        prefix, utf8 = _OTHER_NAMES.get(gn.type_id.dotted_string, ("", True))
        tag, value = _der_string(gn.value)
        if not prefix or tag != (0x0C if utf8 else 0x16):
            return ("othername", "<unsupported>")
        return ("othername", f"{prefix}:{value.decode('utf-8', 'replace')}")
    if isinstance(gn, x509.IPAddress):
        return ("IP Address", _ip_text(gn, "<invalid>"))
    if isinstance(gn, x509.RegisteredID):
        return ("Registered ID", _long(gn.value))
    kind = {x509.DNSName: "DNS", x509.RFC822Name: "email"}.get(type(gn), "URI")
    return (kind, str(gn.value))


def stdlib_peercert(cert: x509.Certificate) -> dict[str, Any]:
    """The dict Python's ``ssl.SSLSocket.getpeercert()`` returns for ``cert``."""
    out: dict[str, Any] = {
        "subject": _rdn_tuples(cert.subject),
        "issuer": _rdn_tuples(cert.issuer),
        "version": cert.version.value + 1,
        "serialNumber": _hex_bytes(cert.serial_number) if cert.serial_number else "00",
        "notBefore": _asn1_time(cert.not_valid_before_utc),
        "notAfter": _asn1_time(cert.not_valid_after_utc),
    }
    if (san := _ext(cert, x509.SubjectAlternativeName)) is not None:
        out["subjectAltName"] = tuple(map(_stdlib_general_name, san))
    aia = list(_ext(cert, x509.AuthorityInformationAccess) or ())
    for key, oid in (
        ("OCSP", AuthorityInformationAccessOID.OCSP),
        ("caIssuers", AuthorityInformationAccessOID.CA_ISSUERS),
    ):
        uris = tuple(
            d.access_location.value
            for d in aia
            if d.access_method == oid
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
        )
        if uris:
            out[key] = uris
    crl = _ext(cert, x509.CRLDistributionPoints) or ()
    crl_uris = tuple(
        name.value
        for point in crl
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
    )
    if crl_uris:
        out["crlDistributionPoints"] = crl_uris
    return out


# --- Node's tls.checkServerIdentity() ------------------------------------------------------

_V4SEG = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_V4 = rf"(?:{_V4SEG}\.){{3}}{_V4SEG}"
_V6SEG = "(?:[0-9a-fA-F]{1,4})"
_IPV4_RE = re.compile(_V4)
_IPV6_RE = re.compile(  # node's internal/net IPv6Reg, verbatim
    "(?:"
    f"(?:{_V6SEG}:){{7}}(?:{_V6SEG}|:)|"
    f"(?:{_V6SEG}:){{6}}(?:{_V4}|:{_V6SEG}|:)|"
    f"(?:{_V6SEG}:){{5}}(?::{_V4}|(?::{_V6SEG}){{1,2}}|:)|"
    f"(?:{_V6SEG}:){{4}}(?:(?::{_V6SEG}){{0,1}}:{_V4}|(?::{_V6SEG}){{1,3}}|:)|"
    f"(?:{_V6SEG}:){{3}}(?:(?::{_V6SEG}){{0,2}}:{_V4}|(?::{_V6SEG}){{1,4}}|:)|"
    f"(?:{_V6SEG}:){{2}}(?:(?::{_V6SEG}){{0,3}}:{_V4}|(?::{_V6SEG}){{1,5}}|:)|"
    f"(?:{_V6SEG}:){{1}}(?:(?::{_V6SEG}){{0,4}}:{_V4}|(?::{_V6SEG}){{1,6}}|:)|"
    f"(?::(?:(?::{_V6SEG}){{0,5}}:{_V4}|(?::{_V6SEG}){{1,7}}|:))"
    r")(?:%[0-9a-zA-Z\-.:]{1,})?"
)
_JSON_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_BAD_LABEL = re.compile("[^\x21-\x7f]")


def _ntop6(packed: bytes) -> str:
    """libuv's inet_ntop for IPv6 (longest zero run as ::, dotted tail for mapped IPv4)."""
    words = [packed[i] << 8 | packed[i + 1] for i in range(0, 16, 2)]
    base, run, i = -1, 1, 0
    for zero, group in itertools.groupby(words, key=lambda w: w == 0):
        n = len(list(group))
        if zero and n > run:
            base, run = i, n
        i += n
    out = ""
    for i, word in enumerate(words):
        if base <= i < base + run:
            out += ":" if i == base else ""
            continue
        out += ":" if i else ""
        if i == 6 and base == 0 and (run == 6 or (run == 7 and words[7] != 1) or
                                     (run == 5 and words[5] == 0xFFFF)):  # fmt: skip
            return out + ".".join(map(str, packed[12:]))
        out += f"{word:x}"
    return out + (":" if base + run == 8 else "")


def _canonical_ip(text: str) -> str | None:
    """node's canonicalizeIP (uv_inet_pton then uv_inet_ntop); None where node has undefined."""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    try:
        return _ntop6(ipaddress.IPv6Address(text.split("%", 1)[0]).packed)
    except ValueError:
        return None


def _unfqdn(host: str) -> str:
    return host[:-1] if host.endswith(".") else host


def _split_host(host: str) -> list[str]:
    return _unfqdn(host).translate(_LOWER).split(".")


def _matches(host_parts: list[str], pattern: Any) -> bool:
    """node's check(hostParts, pattern, wildcards=true)."""
    if not pattern or not isinstance(pattern, str):
        return False
    parts = _split_host(pattern)
    if len(parts) != len(host_parts) or "" in parts or any(map(_BAD_LABEL.search, parts)):
        return False
    if parts[1:] != host_parts[1:]:
        return False
    host, first = host_parts[0], parts[0]
    pieces = first.split("*")
    if len(pieces) == 1 or "xn--" in first:
        return host == first
    if len(pieces) > 2 or len(parts) <= 2:  # one '*' at most, and never "*.tld"
        return False
    prefix, suffix = pieces
    fits = len(prefix) + len(suffix) <= len(host)
    return fits and host.startswith(prefix) and host.endswith(suffix)


def _split_alt_names(alt: str) -> list[str]:
    """node's splitEscapedAltNames: ", "-separated, with JSON string literals inside."""
    result, token, offset = [], "", 0
    while offset != len(alt):
        sep, quote = alt.find(",", offset), alt.find('"', offset)
        if quote != -1 and (sep == -1 or quote < sep):
            token += alt[offset:quote]
            match = _JSON_STRING.match(alt, quote)
            if match is None:
                raise ValueError("Invalid subject alternative name string")
            token += json.loads(match.group())
            offset = match.end()
        elif sep != -1:
            result.append(token + alt[offset:sep])
            token, offset = "", sep + 2
        else:
            token, offset = token + alt[offset:], len(alt)
    return [*result, token]


def _js_str(value: Any) -> str:
    if isinstance(value, list):
        return ",".join("" if v is None else _js_str(v) for v in value)
    return str(value)


def check_server_identity(hostname: str, cert: dict[str, Any]) -> None:
    """Node 20's ``tls.checkServerIdentity``: None if ``cert`` is valid for ``hostname``.

    DNS names match the certificate's DNS altnames (its CN only when it has none), with
    RFC 6125 wildcards; IP addresses match its IP altnames only. A mismatch raises
    TLSCertificateError (code ``ERR_TLS_CERT_ALTNAME_INVALID``) with Node's ``reason``.
    """
    alt = cert.get("subjectaltname")
    dns_names: list[str] = []
    ips: list[str | None] = []
    if alt and isinstance(alt, str):
        try:
            names = _split_alt_names(alt) if '"' in alt else alt.split(", ")
        except ValueError as exc:
            raise TLSCertificateError(
                str(exc), code="ERR_TLS_CERT_ALTNAME_FORMAT", host=hostname, cert=cert
            ) from None
        for name in names:
            if name.startswith("DNS:"):
                dns_names.append(name[4:])
            elif name.startswith("IP Address:"):
                ips.append(_canonical_ip(name[11:]))
    subject = cert.get("subject")
    cn = subject.get("CN") if isinstance(subject, dict) else None
    host = _unfqdn(hostname)
    if _IPV4_RE.fullmatch(host) or _IPV6_RE.fullmatch(host):
        if _canonical_ip(host) in ips:
            return
        reason = f"IP: {host} is not in the cert's list: " + ", ".join(ip or "" for ip in ips)
    elif dns_names or cn or isinstance(cn, list):  # JavaScript truthiness: [] is true
        parts = _split_host(host)
        if dns_names:  # the CN counts only when there are no DNS altnames
            if any(_matches(parts, name) for name in dns_names):
                return
            reason = f"Host: {host}. is not in the cert's altnames: {alt}"
        else:
            if any(_matches(parts, c) for c in (cn if isinstance(cn, list) else [cn])):
                return
            reason = f"Host: {host}. is not cert's CN: {_js_str(cn)}"
    else:
        reason = "Cert does not contain a DNS name"
    raise TLSCertificateError(
        f"Hostname/IP does not match certificate's altnames: {reason}",
        code="ERR_TLS_CERT_ALTNAME_INVALID",
        reason=reason,
        host=hostname,
        cert=cert,
    )
