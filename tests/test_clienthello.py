"""aiotls.clienthello: the ClientHello parser and its JA4 fingerprint.

JA4 is checked against an implementation aiotls did not write, ja4plus (PyPI), fed the
very bytes real clients sent to a plain TCP listener on 127.0.0.1: openssl s_client,
gnutls-cli, curl, node, Python's ssl, aiotls's own client and headless Chromium. FoxIO's
published example (technical_details/JA4.md) is rebuilt as a ClientHello and must give
the published values. Hypothesis checks that no input makes the parser raise anything
but ClientHelloError, that parse() reads back what a builder wrote, and that ja4plus
agrees on arbitrary well-formed hellos.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shlex
import shutil
import ssl
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ja4plus import JA4Fingerprinter
from peers import HOST, require, run_peer
from scapy.all import IP, TCP, Raw

import aiotls
from aiotls.clienthello import MAX_CLIENT_HELLO, ClientHello, ClientHelloError, is_grease

# -- a ClientHello builder (the test's own, byte by byte from RFC 8446 4.1.2) ---------

GREASE = [0x0A0A + 0x1010 * i for i in range(16)]


def vec(data: bytes, size: int) -> bytes:
    """``data`` behind a ``size``-byte length."""
    return len(data).to_bytes(size, "big") + data


def u16s(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def sni_body(name: str) -> bytes:
    return vec(b"\x00" + vec(name.encode(), 2), 2)


def alpn_body(protocols: list[bytes]) -> bytes:
    return vec(b"".join(vec(p, 1) for p in protocols), 2)


def key_share_body(groups: list[int]) -> bytes:
    return vec(b"".join(g.to_bytes(2, "big") + vec(b"\x42" * 32, 2) for g in groups), 2)


def build_hello(
    cipher_suites: list[int],
    extensions: list[tuple[int, bytes]] | None,
    *,
    legacy_version: int = 0x0303,
    random: bytes = bytes(32),
    session_id: bytes = b"",
    compression: bytes = b"\x00",
) -> bytes:
    """A ClientHello handshake message; ``extensions=None`` leaves the block out."""
    body = legacy_version.to_bytes(2, "big") + random + vec(session_id, 1)
    body += vec(u16s(cipher_suites), 2) + vec(compression, 1)
    if extensions is not None:
        body += vec(b"".join(t.to_bytes(2, "big") + vec(d, 2) for t, d in extensions), 2)
    return b"\x01" + vec(body, 3)


def in_records(message: bytes, size: int = 1 << 14, version: bytes = b"\x03\x01") -> bytes:
    """``message`` framed as handshake records of at most ``size`` bytes each."""
    return b"".join(
        b"\x16" + version + vec(message[i : i + size], 2) for i in range(0, len(message), size)
    )


def engine_hello(**options: Any) -> bytes:
    """The records of the ClientHello OpenSSL sends for an aiotls client (no socket)."""
    ctx = aiotls.create_secure_context(**options)
    return aiotls.TLSEngine(ctx, server_hostname="example.test").data_to_send()


# -- ja4plus, the reference ---------------------------------------------------------


def ja4plus_forms(records: bytes) -> tuple[str, str, str, str]:
    """(JA4, JA4_r, JA4_o, JA4_ro) by ja4plus, given the bytes of one TCP segment that
    carries the ClientHello, through its public packet API (a scapy IP/TCP packet)."""
    fingerprinter = JA4Fingerprinter()
    packet = IP(src=HOST, dst=HOST) / TCP(sport=50000, dport=443, flags="PA") / Raw(load=records)
    ja4 = fingerprinter.process_packet(packet)
    assert ja4 is not None, "ja4plus found no ClientHello"
    return (
        ja4,
        fingerprinter.last_raw,
        fingerprinter.last_fingerprint_original_order,
        fingerprinter.last_raw_original_order,
    )


def ours(hello: ClientHello) -> tuple[str, str, str, str]:
    return hello.ja4, hello.ja4_r, hello.ja4_o, hello.ja4_ro


# -- FoxIO's published example ------------------------------------------------------

# technical_details/JA4.md of FoxIO-LLC/ja4: the lists of its example, in wire order.
FOXIO_CIPHERS = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8,
                 0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]  # fmt: skip
FOXIO_EXTENSIONS = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005,
                    0x0023, 0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015]  # fmt: skip
FOXIO_SIGNATURES = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]
FOXIO_PUBLISHED = {
    "ja4": "t13d1516h2_8daaf6152771_e5627efa2ab1",
    "ja4_r": "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,"
    "cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_"
    "0403,0804,0401,0503,0805,0501,0806,0601",
    "ja4_o": "t13d1516h2_acb858a92679_18f69afefd3d",
    "ja4_ro": "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,"
    "002f,0035_001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,"
    "0015_0403,0804,0401,0503,0805,0501,0806,0601",
}


def foxio_example(grease: bool) -> bytes:
    """FoxIO's example as a ClientHello; with ``grease``, GREASE values in every list
    (JA4 must ignore them: the published values have none)."""
    bodies = {
        0x0000: sni_body("example.com"),
        0x0010: alpn_body([b"h2", b"http/1.1"]),
        0x000D: vec(u16s(([0x1A1A] if grease else []) + FOXIO_SIGNATURES), 2),
        0x002B: vec(u16s(([0x2A2A] if grease else []) + [0x0304, 0x0303]), 1),
        0x000A: vec(u16s(([0x3A3A] if grease else []) + [0x001D, 0x0017]), 2),
        0x0033: key_share_body([0x001D]),
    }
    extensions = [(t, bodies.get(t, b"")) for t in FOXIO_EXTENSIONS]
    ciphers = FOXIO_CIPHERS
    if grease:
        extensions = [(0x4A4A, b""), *extensions[:5], (0x5A5A, b"\x00"), *extensions[5:]]
        ciphers = [0x6A6A, *ciphers]
    return build_hello(ciphers, extensions)


@pytest.mark.parametrize("grease", [False, True], ids=["plain", "with-grease"])
def test_foxio_published_example(grease: bool) -> None:
    """The four published forms of FoxIO's JA4 example, from a ClientHello with its lists
    (the example's capture is not published as bytes; its lists are)."""
    hello = ClientHello.parse(foxio_example(grease))
    assert {form: getattr(hello, form) for form in FOXIO_PUBLISHED} == FOXIO_PUBLISHED
    assert hello.grease is grease
    assert ja4plus_forms(in_records(hello.raw)) == ours(hello)


def test_foxio_published_hashes_of_the_lists() -> None:
    """The hashes JA4.md publishes for the example's sorted lists, computed over the
    lists as ja4_r shows them (with and without the signature algorithms)."""
    hello = ClientHello.parse(foxio_example(grease=False))
    _, ciphers, extensions, signatures = hello.ja4_r.split("_")
    assert hashlib.sha256(ciphers.encode()).hexdigest()[:12] == "8daaf6152771"
    both = f"{extensions}_{signatures}"
    assert hashlib.sha256(both.encode()).hexdigest() == (
        "e5627efa2ab19723084c1033a96c694a45826ab5a460d2d3fd5ffcfe97161c95"
    )
    # "If there are no signature algorithms in the hello packet, then the string ends
    # without an underscore and is hashed": the published value for the same list.
    assert hashlib.sha256(extensions.encode()).hexdigest()[:12] == "6d807ffa2a79"


@pytest.mark.parametrize(
    ("alpn", "expected"),
    [
        (None, "00"),
        (b"h2", "h2"),
        (b"http/1.1", "h1"),
        (b"a", "aa"),  # one character: both first and last
        # JA4.md: a non-alphanumeric first or last byte: the hex form's ends instead
        (b"\xab", "ab"),
        (b"\xab\xcd", "ad"),
        (b"\x30\xab", "3b"),
        (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
        (b"\x1a\x1a", "h2"),  # a GREASE protocol (RFC 8701) is skipped: the next one counts
    ],
)
def test_ja4_alpn_characters_follow_the_specification(alpn: bytes | None, expected: str) -> None:
    extensions = [] if alpn is None else [(0x0010, alpn_body([alpn, b"h2"]))]
    hello = ClientHello.parse(build_hello([0x1301], extensions))
    assert hello.ja4[8:10] == expected


def test_ja4_of_bare_hellos() -> None:
    """No extension block at all (a TLS 1.0-era hello): the legacy version, "i", zero
    counts, "00" and the all-zero extension hash; GREASE ciphers alone: the all-zero
    cipher hash too."""
    hello = ClientHello.parse(build_hello([0x002F, 0x0035], None, legacy_version=0x0301))
    assert hello.extensions == () and hello.supported_versions == ()
    cipher_hash = hashlib.sha256(b"002f,0035").hexdigest()[:12]
    assert hello.ja4 == f"t10i020000_{cipher_hash}_000000000000"
    assert hello.ja4_r == "t10i020000_002f,0035_"
    only_grease = ClientHello.parse(build_hello([0x0A0A], [], legacy_version=0x0300))
    assert only_grease.ja4 == "ts3i000000_000000000000_000000000000"
    assert only_grease.ja4_ro == "ts3i000000__"


def test_ja4_version_from_supported_versions() -> None:
    """The highest non-GREASE supported_versions entry wins over legacy_version; unknown
    versions are "00"; a list of GREASE alone falls back to legacy_version."""

    def version_of(versions: list[int], legacy: int = 0x0303) -> str:
        ext = [(0x002B, vec(u16s(versions), 1))]
        return ClientHello.parse(build_hello([0x1301], ext, legacy_version=legacy)).ja4[1:3]

    assert version_of([0x0303, 0x0304, 0x7A7A]) == "13"
    assert version_of([0x0302, 0x0301]) == "11"
    assert version_of([0x0A0A], legacy=0x0301) == "10"
    assert version_of([0x0300]) == "s3"
    assert version_of([0x7F1C]) == "00"  # a draft number nobody maps


def test_sni_and_alpn_counted_but_not_hashed() -> None:
    """SNI and ALPN count as extensions and set "d" and the ALPN characters, but the
    sorted extension hash leaves them out: the same client to an IP address (no SNI) or
    with another ALPN list has the same third part."""
    common = [(0x000D, vec(u16s([0x0403]), 2)), (0x002B, vec(u16s([0x0304]), 1))]
    to_name = ClientHello.parse(
        build_hello(
            [0x1301],
            [(0x0000, sni_body("a.example")), *common, (0x0010, alpn_body([b"h2"]))],
        )
    )
    to_ip = ClientHello.parse(build_hello([0x1301], common))
    assert to_name.ja4.split("_")[0] == "t13d0104h2"
    assert to_ip.ja4.split("_")[0] == "t13i010200"
    assert to_name.ja4.split("_")[1:] == to_ip.ja4.split("_")[1:]
    assert to_name.ja4_o.split("_")[2] != to_ip.ja4_o.split("_")[2]  # wire order keeps them


# -- what the parser reads -------------------------------------------------------------


def test_fields_of_an_openssl_hello() -> None:
    """A TLS 1.3 ClientHello from aiotls's engine (OpenSSL's own bytes), field by field."""
    records = engine_hello(alpn_protocols=["h2", "http/1.1"])
    hello = ClientHello.from_records(records)
    assert hello is not None
    assert hello.raw == records[5:]  # one record, holding the whole message
    assert hello.legacy_version == 0x0303
    assert hello.version == 0x0304 and 0x0304 in hello.supported_versions
    assert hello.server_name == "example.test"
    assert hello.alpn_protocols == ("h2", "http/1.1")
    assert 0x1301 in hello.cipher_suites and hello.compression_methods == b"\x00"
    assert hello.extension_types[-1] == 0x0010
    assert hello.extension(0x0000) == sni_body("example.test")
    assert hello.extension(0x4469) is None
    assert 0x001D in hello.supported_groups
    assert set(hello.key_share_groups) <= set(hello.supported_groups) and hello.key_share_groups
    assert 0x0804 in hello.signature_algorithms
    assert len(hello.session_id) == 32  # TLS 1.3 middlebox compatibility id
    assert hello.session_ticket == b"" and not hello.offers_psk and not hello.grease
    assert len(hello.random) == 32 and hello.random == hello.raw[6:38]
    assert "Extension(type=51" in repr(hello)  # bodies stay out of the repr
    with pytest.raises(AttributeError):
        hello.server_name = "other"  # type: ignore[misc]


def test_fields_of_a_tls12_hello_without_sni() -> None:
    ctx = aiotls.create_secure_context(max_version="TLSv1.2", reject_unauthorized=False)
    records = aiotls.TLSEngine(ctx, server_hostname=None).data_to_send()
    hello = ClientHello.from_records(records)
    assert hello is not None
    assert hello.server_name is None and hello.alpn_protocols == ()
    assert hello.supported_versions == () and hello.version == 0x0303
    assert hello.key_share_groups == ()
    assert hello.ja4.startswith("t12i")


def test_grease_marks() -> None:
    assert [is_grease(v) for v in (0x0A0A, 0xFAFA, 0x0A1A, 0x1A0A, 0x0A0B, 0x0000)] == [
        True, True, False, False, False, False]  # fmt: skip
    assert all(is_grease(v) for v in GREASE)
    hello = ClientHello.parse(foxio_example(grease=True))
    assert [ext.grease for ext in hello.extensions].count(True) == 2
    assert hello.cipher_suites[0] == 0x6A6A and hello.signature_algorithms[0] == 0x1A1A


def test_from_records_reassembles_a_hello_split_across_records() -> None:
    """A ClientHello in 100-byte records, fed a byte more each time: None until its last
    byte, then the same hello as one record gives; bytes after its records are not read."""
    message = ClientHello.from_records(engine_hello())
    assert message is not None
    records = in_records(message.raw, size=100)
    assert records.count(b"\x16\x03\x01") >= 2
    for end in range(len(records)):
        assert ClientHello.from_records(records[:end]) is None
    after = b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x05hello"  # CCS, early data
    assert ClientHello.from_records(records + after) == message


BASE = build_hello([0x1301], [(0x0000, sni_body("a.example")), (0x0010, alpn_body([b"h2"]))])


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GET / HTTP/1.1\r\n", "record type 71"),
        (b"\x80\x2e\x01\x03\x01", "record type 128"),  # an SSLv2-format hello
        (b"\x16\x02\x00", "not TLS"),
        (b"\x16\x03\x01\x00\x00", "a handshake record of 0 bytes"),
        (b"\x16\x03\x01\x40\x01", "a handshake record of 16385 bytes"),
        (b"\x16\x03\x01\x00\x04\x02", "type 2 is not ClientHello"),  # a ServerHello
        (b"\x16\x03\x01\x00\x04\x01\x03\x00\x00", f"over the {MAX_CLIENT_HELLO}-byte limit"),
        (in_records(build_hello([0x1301], []) + b"\x0b\x00\x00\x00"), "more handshake data"),
        (in_records(BASE[:20]) + b"\x15\x03\x01\x00\x02\x02\x28", "record type 21"),
    ],
)
def test_from_records_refuses_early(data: bytes, why: str) -> None:
    """What cannot start a ClientHello is refused as soon as it shows, without waiting
    for more bytes (a buffering caller never holds more than one bounded hello)."""
    with pytest.raises(ClientHelloError, match=why) as caught:
        ClientHello.from_records(data)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, aiotls.TLSError)
    assert caught.value.code == "ERR_TLS_INVALID_CLIENT_HELLO"


def _mutated(message: bytes, offset: int, value: bytes) -> bytes:
    return message[:offset] + value + message[offset + len(value) :]


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (BASE[:-1], "bytes for a"),
        (BASE + b"\x00", "bytes for a"),
        (b"\x02" + BASE[1:], "is not ClientHello"),
        (build_hello([], []), "cipher_suites has 0 bytes"),
        (_mutated(build_hello([0x1301, 0x1302], []), 39, b"\x00\x03"), "cipher_suites has 3"),
        (build_hello([0x1301], [], compression=b""), "compression_methods is empty"),
        (build_hello([0x1301], [], session_id=bytes(33)), "legacy_session_id has 33 bytes"),
        (build_hello([0x1301], [(1, b""), (1, b"")]), "appears twice"),
        (build_hello([0x1301], [(41, b""), (0, sni_body("x"))]), "pre_shared_key is not"),
        (build_hello([0x1301], [(0, b"")]), "server_name extension is truncated"),
        (build_hello([0x1301], [(0, vec(b"\x01" + vec(b"x", 2), 2))]), "not a host_name"),
        (build_hello([0x1301], [(0, sni_body("a") + b"\x00")]), "stray bytes"),
        (build_hello([0x1301], [(0, vec(b"\x00\x00\x00", 2))]), "host_name is empty"),
        (build_hello([0x1301], [(16, vec(b"", 2))]), "ALPN list is empty"),
        (build_hello([0x1301], [(16, vec(b"\x00", 2))]), "an ALPN protocol is empty"),
        (build_hello([0x1301], [(16, vec(b"\x05h2", 2))]), "ALPN protocol is longer"),
        (build_hello([0x1301], [(43, vec(b"\x03", 1))]), "supported_versions list has 1"),
        (build_hello([0x1301], [(10, vec(b"", 2))]), "supported_groups list has 0"),
        (build_hello([0x1301], [(13, b"\x00")]), "signature_algorithms is truncated"),
        (build_hello([0x1301], [(51, vec(b"\x00\x1d\x00\x00", 2))]), "key_share entry is empty"),
    ],
)
def test_parse_refuses_malformed_hellos(message: bytes, why: str) -> None:
    with pytest.raises(ClientHelloError, match=why):
        ClientHello.parse(message)


# -- hypothesis: no crash, round trip, agreement with ja4plus --------------------------

_code = st.one_of(st.integers(0, 0xFFFF), st.sampled_from(GREASE))
_codes = st.lists(_code, min_size=1, max_size=12)
_known = {0, 10, 13, 16, 35, 41, 43, 51}
_others = st.dictionaries(
    st.integers(0, 0xFFFF).filter(lambda t: t not in _known), st.binary(max_size=8), max_size=6
)
_protocols = st.lists(st.binary(min_size=1, max_size=9), min_size=1, max_size=4)
_hostname = st.text(string.ascii_lowercase + string.digits + ".-", min_size=1, max_size=30)


@st.composite
def hello_fields(draw: st.DrawFn) -> dict[str, Any]:
    """The fields of a well-formed ClientHello, with its extensions in a drawn order."""
    return {
        "legacy_version": draw(st.sampled_from([0x0300, 0x0301, 0x0302, 0x0303, 0x7F00])),
        "random": draw(st.binary(min_size=32, max_size=32)),
        "session_id": draw(st.binary(max_size=32)),
        "cipher_suites": tuple(draw(st.lists(_code, min_size=1, max_size=40))),
        "compression_methods": draw(st.binary(min_size=1, max_size=3)),
        "server_name": draw(st.none() | _hostname),
        "alpn": draw(st.none() | _protocols),
        "supported_versions": draw(st.none() | _codes),
        "supported_groups": draw(st.none() | _codes),
        "key_share_groups": draw(st.none() | st.lists(_code, max_size=3)),
        "signature_algorithms": draw(st.none() | _codes),
        "session_ticket": draw(st.none() | st.binary(max_size=40)),
        "offers_psk": draw(st.booleans()),
        "others": draw(_others),
        "order": draw(st.randoms(use_true_random=False)),
    }


def build_from(fields: dict[str, Any]) -> bytes:
    """The ClientHello ``fields`` describe (pre_shared_key last, as it must be)."""
    exts: list[tuple[int, bytes]] = list(fields["others"].items())
    if fields["server_name"] is not None:
        exts.append((0, sni_body(fields["server_name"])))
    if fields["alpn"] is not None:
        exts.append((16, alpn_body(fields["alpn"])))
    for ext_type, key, size in ((43, "supported_versions", 1), (10, "supported_groups", 2),
                                (13, "signature_algorithms", 2)):  # fmt: skip
        if fields[key] is not None:
            exts.append((ext_type, vec(u16s(fields[key]), size)))
    if fields["key_share_groups"] is not None:
        exts.append((51, key_share_body(fields["key_share_groups"])))
    if fields["session_ticket"] is not None:
        exts.append((35, fields["session_ticket"]))
    fields["order"].shuffle(exts)
    if fields["offers_psk"]:
        exts.append((41, vec(vec(b"id" + bytes(4), 2), 2) + vec(vec(bytes(32), 1), 2)))
    return build_hello(
        list(fields["cipher_suites"]),
        exts,
        legacy_version=fields["legacy_version"],
        random=fields["random"],
        session_id=fields["session_id"],
        compression=fields["compression_methods"],
    )


@settings(max_examples=300, deadline=None)
@given(hello_fields())
def test_parse_reads_back_what_was_built(fields: dict[str, Any]) -> None:
    message = build_from(fields)
    hello = ClientHello.parse(message)
    for key in ("legacy_version", "random", "session_id", "cipher_suites",
                "compression_methods", "server_name", "session_ticket", "offers_psk"):  # fmt: skip
        assert getattr(hello, key) == fields[key], key
    for key in ("supported_versions", "supported_groups", "key_share_groups",
                "signature_algorithms"):  # fmt: skip
        assert getattr(hello, key) == tuple(fields[key] or ()), key
    assert hello.alpn_protocols == tuple(p.decode("ascii", "replace") for p in fields["alpn"] or ())
    assert hello.raw == message
    for ext_type, data in fields["others"].items():
        assert hello.extension(ext_type) == data
    assert ClientHello.from_records(in_records(message, size=97)) == hello


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hello_fields())
def test_ja4_agrees_with_ja4plus_on_any_hello(fields: dict[str, Any]) -> None:
    """Arbitrary well-formed hellos: ja4plus gives the same four forms, except for the
    two ALPN characters when the first protocol has a non-alphanumeric end (there the
    written specification and ja4plus part ways; see the module docstring)."""
    hello = ClientHello.parse(build_from(fields))
    theirs = ja4plus_forms(in_records(hello.raw, version=b"\x03\x03"))
    first = (fields["alpn"] or [b"h2"])[0]
    if not bytes((first[0], first[-1])).isalnum():
        theirs = tuple(form[:8] + hello.ja4[8:10] + form[10:] for form in theirs)
    assert ours(hello) == theirs


def _checked(data: bytes, parse: Callable[[bytes], ClientHello | None]) -> None:
    """``parse(data)`` returns or raises ClientHelloError, and a hello it returns can be
    fingerprinted."""
    try:
        hello = parse(data)
    except ClientHelloError:
        return
    if hello is not None:
        assert len(hello.ja4) == 36 and hello.ja4_r and hello.ja4_o and hello.ja4_ro
        assert isinstance(hello.grease, bool) and isinstance(hello.version, int)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes) -> None:
    _checked(data, ClientHello.parse)
    _checked(data, ClientHello.from_records)
    _checked(b"\x01" + data, ClientHello.parse)
    _checked(b"\x16\x03\x01" + data, ClientHello.from_records)


REAL_HELLOS = {
    "openssl-tls13": engine_hello(alpn_protocols=["h2", "http/1.1"]),
    "openssl-tls12": engine_hello(max_version="TLSv1.2"),
    "foxio-grease": in_records(foxio_example(grease=True)),
}


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(sorted(REAL_HELLOS)),
    st.lists(st.tuples(st.integers(0, 5000), st.binary(min_size=1, max_size=3)), max_size=4),
    st.integers(0, 5000),
    st.sampled_from(["replace", "insert", "truncate"]),
)
def test_mutated_real_hellos_never_crash_the_parser(
    name: str, edits: list[tuple[int, bytes]], cut: int, how: str
) -> None:
    """Real ClientHellos with bytes replaced, inserted or cut off: a hello or a
    ClientHelloError, nothing else, from the records and from the bare message."""
    data = REAL_HELLOS[name]
    for offset, value in edits:
        offset %= len(data)
        if how == "insert":
            data = data[:offset] + value + data[offset:]
        else:
            data = _mutated(data, offset, value)
    if how == "truncate":
        data = data[: cut % len(data)]
    _checked(data, ClientHello.from_records)
    _checked(data[5:], ClientHello.parse)


# -- real clients, captured ----------------------------------------------------------

#: How long a client gets to send its ClientHello (Chromium starts slowly on a busy box).
CAPTURE_TIMEOUT = 40.0
SERVERNAME = "example.test"


@contextlib.asynccontextmanager
async def hello_catcher() -> AsyncIterator[tuple[int, asyncio.Future[bytes]]]:
    """A plain TCP listener on 127.0.0.1 that reads its first connection until a whole
    ClientHello arrived (or cannot arrive), keeps those bytes and closes; yields (port,
    future of the bytes)."""
    caught: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def first_bytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        try:
            while ClientHello.from_records(data) is None:
                chunk = await reader.read(65536)
                if not chunk:
                    raise ConnectionError(f"EOF after {len(data)} bytes: {data[:40].hex()}")
                data += chunk
        except (ClientHelloError, ConnectionError) as exc:
            if not caught.done():
                caught.set_exception(exc)
        finally:
            writer.close()
        if not caught.done():
            caught.set_result(data)

    server = await asyncio.start_server(first_bytes, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1], caught
    finally:
        server.close()
        await server.wait_closed()


async def _capture_from(argv_or_client: list[str] | Callable[[int], Awaitable[object]]) -> bytes:
    """The ClientHello bytes a client sends: a program (run, then killed by its PID) or
    a coroutine function of the port (cancelled once the hello arrived; its failure to
    handshake with a listener that hangs up is expected)."""
    async with hello_catcher() as (port, caught):
        if callable(argv_or_client):
            client = asyncio.ensure_future(argv_or_client(port))
            try:
                return await asyncio.wait_for(caught, CAPTURE_TIMEOUT)
            finally:
                client.cancel()
                await asyncio.gather(client, return_exceptions=True)
        argv = [arg.replace("{port}", str(port)) for arg in argv_or_client]
        require(argv[0])
        async with run_peer(*argv) as peer:
            try:
                return await asyncio.wait_for(caught, CAPTURE_TIMEOUT)
            except TimeoutError:
                raise AssertionError(f"no ClientHello from {peer}") from None


async def python_ssl_client(port: int) -> None:
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    await asyncio.open_connection(HOST, port, ssl=ctx, server_hostname=SERVERNAME)


async def aiotls_client(port: int) -> None:
    await aiotls.open_connection(
        HOST, port, servername=SERVERNAME, alpn_protocols=["h2", "http/1.1"]
    )


NODE_CLIENT = (
    "require('tls').connect({host: '127.0.0.1', port: {port}, servername: 'example.test', "
    "ALPNProtocols: ['h2', 'http/1.1']}).on('error', () => {})"
)


def chromium_argv(profile: str) -> list[str]:
    return ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
            f"--host-resolver-rules=MAP {SERVERNAME} 127.0.0.1",
            f"https://{SERVERNAME}:{{port}}/"]  # fmt: skip


#: Each client, how to run it, and the start of the JA4 it must have (the version, SNI
#: and ALPN characters it was told to offer).
CLIENTS: dict[str, tuple[Any, str]] = {
    "openssl-s_client": (
        shlex.split(
            "openssl s_client -connect 127.0.0.1:{port} -servername example.test -alpn h2,http/1.1"
        ),
        "t13d",
    ),
    "openssl-s_client-tls12-no-sni": (
        shlex.split("openssl s_client -connect 127.0.0.1:{port} -tls1_2 -noservername"),
        "t12i",
    ),
    "gnutls-cli": (
        shlex.split(
            "gnutls-cli --port={port} --sni-hostname=example.test --alpn=h2 --insecure 127.0.0.1"
        ),
        "t13d",
    ),
    "curl": (
        shlex.split(
            "curl -sk --max-time 20 --resolve example.test:{port}:127.0.0.1 "
            "https://example.test:{port}/"
        ),
        "t13d",
    ),
    "node": (["node", "-e", NODE_CLIENT], "t13d"),
    "python-ssl": (python_ssl_client, "t13d"),
    "aiotls": (aiotls_client, "t13d"),
    "chromium": (None, "t13d"),  # its argv needs a profile directory: see the test
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
async def test_ja4_of_real_clients_matches_ja4plus(client: str, tmp_path: Any) -> None:
    """The bytes a real client sent to a plain listener: ja4plus computes the same
    JA4, JA4_r, JA4_o and JA4_ro from them as aiotls, and the parsed fields say what the
    client was told to offer."""
    how, prefix = CLIENTS[client]
    if client == "chromium":
        if shutil.which("chromium") is None:
            pytest.skip("chromium is not installed (bash .ci/install-peers.sh installs it)")
        how = chromium_argv(str(tmp_path / "profile"))
    data = await _capture_from(how)
    hello = ClientHello.from_records(data)
    assert hello is not None
    assert ja4plus_forms(data) == ours(hello)
    assert hello.ja4.startswith(prefix), hello.ja4_r
    assert hello.server_name == (None if prefix[3] == "i" else SERVERNAME)
    if client == "chromium":
        assert hello.grease and hello.alpn_protocols[:2] == ("h2", "http/1.1")
