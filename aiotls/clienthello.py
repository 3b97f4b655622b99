"""ClientHello parsing and the JA4 fingerprint; a pure module (no OpenSSL, no asyncio).

:meth:`ClientHello.parse` reads one ClientHello handshake message (RFC 8446 4.1.2,
RFC 5246 7.4.1.2) into a frozen :class:`ClientHello`; :meth:`ClientHello.from_records`
finds that message at the start of a TCP stream, across as many TLS records as the
client split it into. :attr:`ClientHello.ja4` is FoxIO's JA4 fingerprint
(``technical_details/JA4.md`` of FoxIO-LLC/ja4), :attr:`~ClientHello.ja4_r` its raw form,
:attr:`~ClientHello.ja4_o` and :attr:`~ClientHello.ja4_ro` the forms in wire order.

The parser is as strict as OpenSSL about what it reads: wrong lengths, trailing bytes,
an empty cipher or compression list, a repeated extension, a pre_shared_key that is not
last, a server_name that is not exactly one non-empty host_name, an empty ALPN protocol,
an odd-length version, group or signature list. Any of these raises
:class:`ClientHelloError` (never another exception), so a server that reads the hello
before OpenSSL does refuses what OpenSSL would refuse, and only that. Extensions it does
not interpret are kept as bytes, in wire order. Names and ALPN protocols are decoded as
aiotls decodes them elsewhere (ASCII, undecodable bytes replaced); JA4 reads the bytes.

JA4 follows FoxIO's specification: "t" (TLS over TCP), the highest non-GREASE
supported_versions entry (the legacy version without that extension), "d"/"i" for an
SNI extension present/absent, the counts of non-GREASE ciphers and extensions (at most
99), and the first and last characters of the first non-GREASE ALPN protocol ("00"
without one; when either end is not an ASCII letter or digit, the first and last
characters of its hex form); then the truncated sha256 of the sorted cipher list and of
the sorted extension list less SNI and ALPN followed by the signature algorithms in
wire order. GREASE values are left out everywhere; an empty list shows as
``000000000000``. Implementations part ways only on odd first ALPN protocols: for one
with a non-alphanumeric end, ja4plus 1.4 writes a printable byte as itself, a byte from
0x80 as "9" and a control byte as "99" (FoxIO's published output for its
``tls-non-ascii-alpn`` capture shows "99" too); a GREASE protocol first gives "99"
there and "00" in Suricata. aiotls follows the written specification: the hex rule,
GREASE ignored.

How ``on_client_hello`` is wired (aiotls.engine and aiotls._aio.transport):

1. Server side, the engine keeps a copy of the bytes it is fed until
   ``ClientHello.from_records`` answers (at most :data:`MAX_CLIENT_HELLO` plus record
   headers, then the copy is dropped); it needs no second parser for a partial hello.
2. OpenSSL's ClientHello callback (``SSL_CTX_set_client_hello_cb``, which already pauses
   the handshake for the session store and an awaitable ALPN selector) returns "retry"
   the first time it runs when ``on_client_hello`` is set: the handshake pauses with the
   parsed ClientHello on the engine, before SNI, the session store, ALPN or any
   certificate is decided. A :class:`ClientHelloError` ends the handshake there with a
   decode_error alert, reported like any client-caused handshake failure.
3. The transport calls ``on_client_hello(hello)`` once per connection (plain or
   awaited, under ``handshake_timeout``); a TLS 1.3 HelloRetryRequest's second
   ClientHello does not call it again.
4. Its answer: None goes on as if there were no hook (``sni_callback``, ``add_context``
   and the session store decide as usual); a SecureContext is applied the way an SNI
   answer is (``SSL_set_SSL_CTX`` from the callback), and then ``sni_callback`` is not
   asked; a refusal (raised or returned, carrying an alert number, handshake_failure by
   default) makes the callback fail with that alert. The session store and ALPN
   selection run after the hook, against the context it chose, on TLS 1.2 and 1.3 alike.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .errors import TLSError

__all__ = [
    "ALERTS",
    "MAX_CLIENT_HELLO",
    "ClientHello",
    "ClientHelloError",
    "ClientHelloRefused",
    "Extension",
    "is_grease",
]

#: The longest ClientHello body accepted, in bytes: OpenSSL's own limit
#: (CLIENT_HELLO_MAX_LENGTH), so whoever buffers a hello for this parser has a bound.
MAX_CLIENT_HELLO = 131396

_HANDSHAKE_RECORD = 22
_CLIENT_HELLO = 1
_MAX_FRAGMENT = 1 << 14  # TLSPlaintext.length (RFC 8446 5.1, RFC 5246 6.2.1)

_EXT_SERVER_NAME = 0
_EXT_SUPPORTED_GROUPS = 10
_EXT_SIGNATURE_ALGORITHMS = 13
_EXT_ALPN = 16
_EXT_SESSION_TICKET = 35
_EXT_PRE_SHARED_KEY = 41
_EXT_SUPPORTED_VERSIONS = 43
_EXT_KEY_SHARE = 51

_JA4_VERSIONS = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
_JA4_EMPTY = "000000000000"  # FoxIO: an empty list is shown as zeros, not hashed


class ClientHelloError(TLSError, ValueError):
    """The bytes are not a well-formed ClientHello (also a ValueError)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"malformed ClientHello: {message}", code="ERR_TLS_INVALID_CLIENT_HELLO")


#: TLS alert descriptions by name (RFC 8446 6, RFC 5246 7.2, RFC 7301), for refusals.
ALERTS: dict[str, int] = {
    "unexpected_message": 10,
    "handshake_failure": 40,
    "bad_certificate": 42,
    "certificate_unknown": 46,
    "illegal_parameter": 47,
    "unknown_ca": 48,
    "access_denied": 49,
    "decode_error": 50,
    "protocol_version": 70,
    "insufficient_security": 71,
    "internal_error": 80,
    "inappropriate_fallback": 86,
    "user_canceled": 90,
    "missing_extension": 109,
    "unsupported_extension": 110,
    "unrecognized_name": 112,
    "unknown_psk_identity": 115,
    "certificate_required": 116,
    "no_application_protocol": 120,
}
_ALERT_NAMES = {number: name for name, number in ALERTS.items()}


class ClientHelloRefused(Exception):
    """An ``on_client_hello`` hook's refusal (raised or returned): the handshake ends with
    ``alert`` (a name from :data:`ALERTS` or a number 1-255). A bad alert is refused here,
    where it was given."""

    def __init__(self, alert: str | int = "handshake_failure", reason: str = "") -> None:
        if isinstance(alert, bool) or not isinstance(alert, str | int):
            raise TypeError(f"alert: expected a name or a number, got {type(alert).__name__}")
        if isinstance(alert, str) and alert not in ALERTS:
            raise ValueError(f"alert: unknown alert {alert!r}; one of {', '.join(ALERTS)}")
        number = ALERTS[alert] if isinstance(alert, str) else alert
        if not 0 < number < 256:
            raise ValueError(f"alert: {number} is not a fatal alert number (1-255)")
        #: The alert number sent, and its name (``alert_<number>`` when it has none here).
        self.alert = number
        self.alert_name = _ALERT_NAMES.get(number, f"alert_{number}")
        self.reason = reason
        super().__init__(f"ClientHello refused ({self.alert_name}){': ' if reason else ''}{reason}")


def is_grease(value: int) -> bool:
    """Whether a 16-bit code point is a GREASE value (RFC 8701: 0x0a0a, 0x1a1a ... 0xfafa)."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


class _Reader:
    """Bounds-checked reads over ``data[pos:end]``; an overrun is a ClientHelloError."""

    __slots__ = ("data", "end", "pos", "what")

    def __init__(self, data: bytes, what: str, pos: int = 0, end: int | None = None) -> None:
        self.data, self.what, self.pos = data, what, pos
        self.end = len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if self.end - self.pos < n:
            raise ClientHelloError(f"{self.what} is truncated")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_size: int, what: str) -> _Reader:
        """The length-prefixed block that comes next, as a reader of its own."""
        length = self.uint(length_size)
        if self.end - self.pos < length:
            raise ClientHelloError(f"{what} is longer than {self.what}")
        self.pos += length
        return _Reader(self.data, what, self.pos - length, self.pos)

    def rest(self) -> bytes:
        return self.take(self.end - self.pos)

    def more(self) -> bool:
        return self.pos < self.end

    def finish(self) -> None:
        if self.pos != self.end:
            raise ClientHelloError(f"{self.end - self.pos} stray bytes after {self.what}")


def _body_length(message: bytes | bytearray) -> int:
    """The body length a handshake header gives, within :data:`MAX_CLIENT_HELLO`."""
    if len(message) < 4:
        raise ClientHelloError("the handshake header is truncated")
    length = int.from_bytes(message[1:4], "big")
    if length > MAX_CLIENT_HELLO:
        raise ClientHelloError(f"{length} bytes is over the {MAX_CLIENT_HELLO}-byte limit")
    return length


def _u16_list(data: bytes, length_size: int, what: str) -> tuple[int, ...]:
    """A non-empty list of 2-byte values behind a length, filling ``data`` exactly."""
    outer = _Reader(data, what)
    items = outer.vector(length_size, f"{what} list")
    outer.finish()
    raw = items.rest()
    if not raw or len(raw) % 2:
        raise ClientHelloError(f"{what} list has {len(raw)} bytes")
    return tuple(int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2))


def _alpn_list(data: bytes) -> list[bytes]:
    """The protocols of an ALPN extension body (RFC 7301), none of them empty."""
    outer = _Reader(data, "ALPN extension")
    names = outer.vector(2, "ALPN list")
    outer.finish()
    if not names.more():
        raise ClientHelloError("ALPN list is empty")
    protocols = []
    while names.more():
        protocol = names.vector(1, "ALPN protocol").rest()
        if not protocol:
            raise ClientHelloError("an ALPN protocol is empty")
        protocols.append(protocol)
    return protocols


def _server_name(data: bytes) -> str:
    """The host_name of a server_name extension body: exactly one, as OpenSSL accepts."""
    outer = _Reader(data, "server_name extension")
    names = outer.vector(2, "server_name list")
    outer.finish()
    if names.uint(1) != 0:
        raise ClientHelloError("server_name entry is not a host_name")
    name = names.vector(2, "host_name").rest()
    names.finish()
    if not name or b"\0" in name:
        raise ClientHelloError("host_name is empty or holds a NUL byte")
    return name.decode("ascii", "replace")


def _key_share_groups(data: bytes) -> tuple[int, ...]:
    """The groups of a key_share extension body, in order (the list may be empty)."""
    outer = _Reader(data, "key_share extension")
    shares = outer.vector(2, "key_share list")
    outer.finish()
    groups = []
    while shares.more():
        groups.append(shares.uint(2))
        if not shares.vector(2, "key_exchange").more():
            raise ClientHelloError("a key_share entry is empty")
    return tuple(groups)


def _ja4_alpn(protocol: bytes | None) -> str:
    """JA4's two ALPN characters for the first protocol offered (FoxIO, JA4.md)."""
    if not protocol:
        return "00"
    ends = bytes((protocol[0], protocol[-1]))
    if ends.isalnum():  # bytes.isalnum: ASCII letters and digits only
        return ends.decode("ascii")
    text = protocol.hex()
    return text[0] + text[-1]


def _ja4_hash(text: str, values: list[int]) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if values else _JA4_EMPTY


def _hex_list(values: list[int]) -> str:
    return ",".join(f"{value:04x}" for value in values)


@dataclass(frozen=True, slots=True, repr=False)
class Extension:
    """One ClientHello extension: its code point and its body, as sent."""

    type: int
    data: bytes

    def __repr__(self) -> str:  # the bodies (a post-quantum key share: 1 KiB) stay out
        return f"Extension(type={self.type}, {len(self.data)} bytes)"

    @property
    def grease(self) -> bool:
        """Whether this is a GREASE extension (RFC 8701), sent only to be ignored."""
        return is_grease(self.type)


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a client offered in its ClientHello, parsed from the bytes it sent.

    Lists keep wire order and GREASE values (see :func:`is_grease`, :attr:`grease`);
    an extension that was not sent gives an empty tuple or None.
    """

    #: ClientHello.legacy_version (0x0303 for TLS 1.2 and 1.3 clients).
    legacy_version: int
    #: The supported_versions extension's list.
    supported_versions: tuple[int, ...]
    cipher_suites: tuple[int, ...]
    extensions: tuple[Extension, ...]
    #: The SNI host_name, or None without a server_name extension.
    server_name: str | None
    alpn_protocols: tuple[str, ...]
    supported_groups: tuple[int, ...]
    #: The groups the client sent a key share for (TLS 1.3).
    key_share_groups: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    compression_methods: bytes
    #: legacy_session_id: a TLS 1.2 session to resume, or TLS 1.3's compatibility id.
    session_id: bytes
    #: The session_ticket extension's body (b"" asks for a ticket), None if not sent.
    session_ticket: bytes | None
    #: Whether a pre_shared_key extension (TLS 1.3 resumption or external PSK) was sent.
    offers_psk: bool
    random: bytes = field(repr=False)
    #: The whole handshake message: type, 3-byte length, body.
    raw: bytes = field(repr=False)

    @classmethod
    def parse(cls, data: bytes) -> ClientHello:
        """Parse one ClientHello handshake message (4-byte header included).

        Raises ClientHelloError if it is not exactly one well-formed ClientHello.
        """
        data = bytes(data)
        if data[:1] != bytes((_CLIENT_HELLO,)):
            raise ClientHelloError(f"handshake message type {data[:1].hex()} is not ClientHello")
        length = _body_length(data)
        if len(data) != 4 + length:
            raise ClientHelloError(f"{len(data) - 4} bytes for a {length}-byte message")
        body = _Reader(data, "ClientHello", 4)
        legacy_version = body.uint(2)
        random = body.take(32)
        session_id = body.vector(1, "legacy_session_id").rest()
        if len(session_id) > 32:
            raise ClientHelloError(f"legacy_session_id has {len(session_id)} bytes")
        suites = body.vector(2, "cipher_suites").rest()
        if not suites or len(suites) % 2:
            raise ClientHelloError(f"cipher_suites has {len(suites)} bytes")
        compression = body.vector(1, "legacy_compression_methods").rest()
        if not compression:
            raise ClientHelloError("legacy_compression_methods is empty")
        extensions: list[Extension] = []
        if body.more():  # a TLS 1.2 hello may end here, without an extension block
            block = body.vector(2, "extensions")
            body.finish()
            while block.more():
                ext_type = block.uint(2)
                ext_data = block.vector(2, f"extension {ext_type}").rest()
                extensions.append(Extension(ext_type, ext_data))
        by_type = {ext.type: ext.data for ext in extensions}
        if len(by_type) != len(extensions):
            raise ClientHelloError("an extension appears twice")
        if _EXT_PRE_SHARED_KEY in by_type and extensions[-1].type != _EXT_PRE_SHARED_KEY:
            raise ClientHelloError("pre_shared_key is not the last extension")

        def u16s(ext_type: int, length_size: int, what: str) -> tuple[int, ...]:
            found = by_type.get(ext_type)
            return () if found is None else _u16_list(found, length_size, what)

        sni = by_type.get(_EXT_SERVER_NAME)
        alpn = by_type.get(_EXT_ALPN)
        shares = by_type.get(_EXT_KEY_SHARE)
        return cls(
            legacy_version=legacy_version,
            supported_versions=u16s(_EXT_SUPPORTED_VERSIONS, 1, "supported_versions"),
            cipher_suites=tuple(
                int.from_bytes(suites[i : i + 2], "big") for i in range(0, len(suites), 2)
            ),
            extensions=tuple(extensions),
            server_name=None if sni is None else _server_name(sni),
            alpn_protocols=()
            if alpn is None
            else tuple(p.decode("ascii", "replace") for p in _alpn_list(alpn)),
            supported_groups=u16s(_EXT_SUPPORTED_GROUPS, 2, "supported_groups"),
            key_share_groups=() if shares is None else _key_share_groups(shares),
            signature_algorithms=u16s(_EXT_SIGNATURE_ALGORITHMS, 2, "signature_algorithms"),
            compression_methods=compression,
            session_id=session_id,
            session_ticket=by_type.get(_EXT_SESSION_TICKET),
            offers_psk=_EXT_PRE_SHARED_KEY in by_type,
            random=random,
            raw=data,
        )

    @classmethod
    def from_records(cls, data: bytes) -> ClientHello | None:
        """The ClientHello at the start of ``data``, the first bytes a client sent.

        The message may span several handshake records; bytes after its last record
        (early data, a ChangeCipherSpec) are not read. Returns None while ``data`` is a
        valid but incomplete prefix; raises ClientHelloError as soon as it cannot be
        the start of a ClientHello.
        """
        message = bytearray()
        pos = 0
        while True:
            header = data[pos : pos + 5]
            if header[:1] and header[0] != _HANDSHAKE_RECORD:
                raise ClientHelloError(f"record type {header[0]} is not a handshake record")
            if header[1:2] and header[1] != 3:
                raise ClientHelloError(f"record version {header[1:3].hex()} is not TLS")
            if len(header) < 5:
                return None
            length = int.from_bytes(header[3:5], "big")
            if not 0 < length <= _MAX_FRAGMENT:
                raise ClientHelloError(f"a handshake record of {length} bytes")
            message += data[pos + 5 : pos + 5 + length]
            pos += 5 + length
            if message[:1] and message[0] != _CLIENT_HELLO:
                raise ClientHelloError(f"handshake message type {message[0]} is not ClientHello")
            need = 4 + _body_length(message) if len(message) >= 4 else None
            if need is not None and len(message) > need:
                raise ClientHelloError("more handshake data after the ClientHello in its record")
            if len(data) < pos:  # the last record is still arriving
                return None
            if len(message) == need:
                return cls.parse(bytes(message))

    # -- what the offer means --------------------------------------------------------

    @property
    def version(self) -> int:
        """The highest version offered: supported_versions' highest non-GREASE entry,
        else legacy_version."""
        offered = [v for v in self.supported_versions if not is_grease(v)]
        return max(offered) if offered else self.legacy_version

    @property
    def extension_types(self) -> tuple[int, ...]:
        """The extensions' code points in wire order, GREASE included."""
        return tuple(ext.type for ext in self.extensions)

    def extension(self, ext_type: int) -> bytes | None:
        """The body of the extension with code point ``ext_type``, None if not sent."""
        return next((ext.data for ext in self.extensions if ext.type == ext_type), None)

    @property
    def grease(self) -> bool:
        """Whether the client sent GREASE values (RFC 8701) in any list."""
        lists = (
            self.cipher_suites,
            self.extension_types,
            self.supported_versions,
            self.supported_groups,
            self.key_share_groups,
            self.signature_algorithms,
        )
        return any(is_grease(value) for values in lists for value in values)

    # -- JA4 -------------------------------------------------------------------------

    @property
    def ja4(self) -> str:
        """The JA4 fingerprint, e.g. ``t13d1516h2_8daaf6152771_e5627efa2ab1``."""
        return self._ja4(original_order=False, raw=False)

    @property
    def ja4_r(self) -> str:
        """JA4 unhashed: the sorted cipher and extension lists and the signature algorithms."""
        return self._ja4(original_order=False, raw=True)

    @property
    def ja4_o(self) -> str:
        """JA4 over the lists in wire order (SNI and ALPN kept): FoxIO's ``JA4_o``."""
        return self._ja4(original_order=True, raw=False)

    @property
    def ja4_ro(self) -> str:
        """``ja4_o`` unhashed: FoxIO's ``JA4_ro``."""
        return self._ja4(original_order=True, raw=True)

    def _ja4(self, *, original_order: bool, raw: bool) -> str:
        """One of the four JA4 forms (FoxIO's -o and -r switches)."""
        ciphers = [c for c in self.cipher_suites if not is_grease(c)]
        types = [t for t in self.extension_types if not is_grease(t)]
        signatures = [s for s in self.signature_algorithms if not is_grease(s)]
        alpn = self.extension(_EXT_ALPN)
        version = _JA4_VERSIONS.get(self.version, "00")
        sni = "d" if _EXT_SERVER_NAME in types else "i"
        # RFC 8701 GREASE ALPN values are two equal bytes like 0x1a 0x1a; JA4 ignores GREASE.
        offered = _alpn_list(alpn) if alpn is not None else []
        first_alpn = next(
            (p for p in offered if len(p) != 2 or not is_grease(p[0] << 8 | p[1])), None
        )
        counts = f"{min(len(ciphers), 99):02d}{min(len(types), 99):02d}"
        part_a = f"t{version}{sni}{counts}{_ja4_alpn(first_alpn)}"
        # FoxIO decides "no extensions" on the sorted list (SNI and ALPN out) in both forms.
        counted = sorted(t for t in types if t not in (_EXT_SERVER_NAME, _EXT_ALPN))
        if not original_order:
            ciphers, types = sorted(ciphers), counted
        cipher_text = _hex_list(ciphers)
        ext_text = _hex_list(types) + (f"_{_hex_list(signatures)}" if signatures else "")
        if raw:
            return f"{part_a}_{cipher_text}_{ext_text}"
        return f"{part_a}_{_ja4_hash(cipher_text, ciphers)}_{_ja4_hash(ext_text, counted)}"
