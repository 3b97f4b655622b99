"""Extended OpenSSL access (aiotls._openssl.extended), proved on real in-memory handshakes.

Both ends are pyOpenSSL Connections over memory BIOs in this process, so every wrapper
is exercised against the same OpenSSL that pyOpenSSL uses, with no sockets.
"""

from __future__ import annotations

import gc
import os
import struct
from collections.abc import Callable
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi, lib

from aiotls._openssl import extended as ext
from aiotls._openssl.binding import original_lib
from aiotls.errors import TLSError, TLSFeatureUnavailable

pytestmark = pytest.mark.skipif(
    not ext.available(), reason=f"extended OpenSSL access unavailable: {ext.unavailable_reason()}"
)

TLS12 = SSL.TLS1_2_VERSION
TLS13 = SSL.TLS1_3_VERSION
SSL_CTRL_SET_SESS_CACHE_MODE = 44
SSL_CTRL_GET_MAX_PROTO_VERSION = 131
RECORD_APPLICATION_DATA = 23


# --- helpers -------------------------------------------------------------------------------
def _load(key_pem: str | bytes, chain_pem: str | bytes) -> tuple[Any, list[x509.Certificate]]:
    key_bytes = key_pem.encode() if isinstance(key_pem, str) else key_pem
    chain_bytes = chain_pem.encode() if isinstance(chain_pem, str) else chain_pem
    key = serialization.load_pem_private_key(key_bytes, None)
    return key, x509.load_pem_x509_certificates(chain_bytes)


def server_context(
    key_pem: str, chain_pem: str, *, version: int | None = None, no_ticket: bool = False
) -> SSL.Context:
    key, chain = _load(key_pem, chain_pem)
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_privatekey(key)
    ctx.use_certificate(chain[0])
    for cert in chain[1:]:
        ctx.add_extra_chain_cert(cert)
    if version is not None:
        ctx.set_min_proto_version(version)
        ctx.set_max_proto_version(version)
    if no_ticket:
        ctx.set_options(SSL.OP_NO_TICKET)
    return ctx


def client_context(ca_pem: str | None = None, *, version: int | None = None) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if ca_pem is not None:
        for cert in x509.load_pem_x509_certificates(ca_pem.encode()):
            ctx.get_cert_store().add_cert(crypto.X509.from_cryptography(cert))  # type: ignore[union-attr]
        ctx.set_verify(SSL.VERIFY_PEER)
    if version is not None:
        ctx.set_min_proto_version(version)
        ctx.set_max_proto_version(version)
    return ctx


def pump(src: SSL.Connection, dst: SSL.Connection) -> int:
    """Move every byte src has written into dst's input; returns how many."""
    moved = 0
    while True:
        try:
            data = src.bio_read(65536)
        except SSL.WantReadError:
            return moved
        if not data:
            return moved
        dst.bio_write(data)
        moved += len(data)


def handshake(client: SSL.Connection, server: SSL.Connection) -> None:
    """Drive both handshakes to completion over the memory BIOs."""
    client.set_connect_state()
    server.set_accept_state()
    done: set[str] = set()
    for _ in range(30):
        for name, conn in (("client", client), ("server", server)):
            try:
                conn.do_handshake()
                done.add(name)
            except SSL.WantReadError:
                pass
        moved = pump(client, server) + pump(server, client)
        if len(done) == 2 and not moved:
            return
    raise AssertionError("handshake did not finish")


def exchange(client: SSL.Connection, server: SSL.Connection) -> None:
    """One round trip of application data (lets the client read TLS 1.3 tickets)."""
    server.send(b"ping")
    pump(server, client)
    assert client.recv(100) == b"ping"
    client.send(b"pong")
    pump(client, server)
    assert server.recv(100) == b"pong"


def connect(
    client_ctx: SSL.Context, server_ctx: SSL.Context, session: Any = None, *, close: bool = True
) -> tuple[SSL.Connection, SSL.Connection]:
    """Handshake, one round trip, then (by default) close_notify both ways.

    The clean close matters: OpenSSL marks the session of a connection freed without
    sending close_notify as not resumable (ssl_clear_bad_session).
    """
    client = SSL.Connection(client_ctx, None)
    server = SSL.Connection(server_ctx, None)
    if session is not None:
        client.set_session(session)
    handshake(client, server)
    exchange(client, server)
    if close:
        client.shutdown()
        server.shutdown()
        pump(client, server)
        pump(server, client)
    return client, server


def reused(conn: SSL.Connection) -> bool:
    return bool(lib.SSL_session_reused(conn._ssl))


def records(wire: bytes) -> list[tuple[int, int]]:
    """(content type, length) of each TLS record in ``wire``."""
    out, i = [], 0
    while i < len(wire):
        content_type, _version, length = struct.unpack_from("!BHH", wire, i)
        out.append((content_type, length))
        i += 5 + length
    assert i == len(wire)
    return out


# --- availability and validation ---------------------------------------------------------
def test_available_and_all_features() -> None:
    assert ext.available() is True
    assert ext.unavailable_reason() is None
    feats = ext.features()
    for name in (
        "npn",
        "ticket_keys",
        "resume_session",
        "groups",
        "max_send_fragment",
        "peer_tmp_key",
        "standard_cipher_name",
        "chain_per_cert",
        "new_session_cb",
    ):
        assert feats[name] is True, name
    ext.require("ticket_keys", "ticket_keys")  # no error


def test_load_bias_validated_against_cffi_wrappers() -> None:
    resolver = ext._get_resolver()
    mapping = resolver._mapping
    assert mapping is not None
    # cffi's ffi.addressof gives the _cffi_d_ wrapper, which the symtab also lists.
    name = "SSL_get_servername"
    addr = int(ffi.cast("uintptr_t", ffi.addressof(original_lib(), name)))
    assert addr == mapping.bias + resolver._values[f"_cffi_d_{name}"]
    assert resolver._validate(mapping) is None
    # A bias that is off by one page is caught.
    wrong = ext._Mapping(mapping.bias + 4096, mapping.exec_ranges)
    problem = resolver._validate(wrong)
    assert problem is not None and "load address check failed" in problem


def test_resolved_pointers_drive_pyopenssl_objects() -> None:
    """The symtab's SSL_CTX_ctrl talks to the same SSL_CTX as cffi's declared calls."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_max_proto_version(TLS12)
    assert ext.ctx_ctrl(ctx._context, SSL_CTRL_GET_MAX_PROTO_VERSION, 0) == TLS12
    ext.ctx_ctrl(ctx._context, SSL_CTRL_SET_SESS_CACHE_MODE, lib.SSL_SESS_CACHE_BOTH)
    assert lib.SSL_CTX_get_session_cache_mode(ctx._context) == lib.SSL_SESS_CACHE_BOTH


def test_require_unknown_feature() -> None:
    with pytest.raises(ValueError, match="unknown extended feature"):
        ext.require("telepathy", "telepathy")


# --- unavailable -------------------------------------------------------------------------
def _unavailable(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.setattr(ext, "_library_path", lambda: path)
    monkeypatch.setattr(ext, "_resolver", None)


def test_missing_library_disables_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    _unavailable(monkeypatch, "/nonexistent/cryptography/_rust.abi3.so")
    assert ext.available() is False
    reason = ext.unavailable_reason()
    assert reason is not None and "not found" in reason
    assert set(ext.features().values()) == {False}
    with pytest.raises(TLSFeatureUnavailable) as info:
        ext.require("ticket_keys", "ticket_keys")
    err = info.value
    assert isinstance(err, TLSError) and isinstance(err, NotImplementedError)
    assert err.code == "ERR_TLS_FEATURE_UNAVAILABLE"
    assert "'ticket_keys'" in str(err) and "not found" in str(err)
    with pytest.raises(TLSFeatureUnavailable, match="npn_protocols"):
        ext.require("npn", "npn_protocols")
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    with pytest.raises(TLSFeatureUnavailable):
        ext.set_ticket_keys(ctx._context, bytes(80))
    with pytest.raises(TLSFeatureUnavailable):
        ext.set_npn_advertised(ctx._context, [b"h2"])


def test_non_elf_library_is_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    bogus = tmp_path / "_rust.abi3.so"
    bogus.write_bytes(b"#!/bin/sh\n" * 20)
    _unavailable(monkeypatch, str(bogus))
    assert ext.available() is False
    assert "not an ELF file" in (ext.unavailable_reason() or "")
    assert not any(ext.features().values())


def test_unmapped_copy_is_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """A readable ELF with the right symbols that this process did not load is refused."""
    real = ext._library_path()
    assert real is not None
    copy = tmp_path / "_rust.abi3.so"
    with open(real, "rb") as f:
        copy.write_bytes(f.read())
    _unavailable(monkeypatch, str(copy))
    assert ext.available() is False
    assert "not mapped" in (ext.unavailable_reason() or "")


# --- ticket keys -------------------------------------------------------------------------
def test_ticket_keys_round_trip(server_key_pem: str, server_chain_pem: str) -> None:
    ctx = server_context(server_key_pem, server_chain_pem)
    default = ext.get_ticket_keys(ctx._context)
    assert len(default) == 80
    keys = os.urandom(80)
    ext.set_ticket_keys(ctx._context, keys)
    assert ext.get_ticket_keys(ctx._context) == keys
    with pytest.raises(ValueError, match="80 bytes"):
        ext.set_ticket_keys(ctx._context, bytes(48))
    with pytest.raises(TypeError):
        ext.set_ticket_keys(ctx._context, "x" * 80)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def test_shared_ticket_keys_resume_across_contexts(
    version: int, server_key_pem: str, server_chain_pem: str, ca_pem: str
) -> None:
    keys = os.urandom(80)
    one = server_context(server_key_pem, server_chain_pem, version=version)
    two = server_context(server_key_pem, server_chain_pem, version=version)
    other = server_context(server_key_pem, server_chain_pem, version=version)
    ext.set_ticket_keys(one._context, keys)
    ext.set_ticket_keys(two._context, keys)
    ext.set_ticket_keys(other._context, os.urandom(80))
    cctx = client_context(ca_pem, version=version)

    first, _ = connect(cctx, one)
    assert not reused(first)
    session = first.get_session()
    assert session is not None

    resumed, server = connect(cctx, two, session)
    assert reused(resumed) and reused(server)

    fresh, server = connect(cctx, other, session)
    assert not reused(fresh) and not reused(server)


# --- groups ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("groups", "expected"),
    [("X25519", "x25519"), ("X25519MLKEM768", "X25519MLKEM768"), ("P-256", "secp256r1")],
)
def test_groups_list_selects_group(
    groups: str, expected: str, server_key_pem: str, server_chain_pem: str
) -> None:
    sctx = server_context(server_key_pem, server_chain_pem)
    cctx = client_context()
    ext.set_groups_list(sctx._context, groups)
    ext.set_groups_list(cctx._context, "X25519MLKEM768:X25519:P-256")
    client, server = connect(cctx, sctx)
    assert client.get_group_name() == expected
    assert server.get_group_name() == expected


@pytest.mark.parametrize(
    ("groups", "expected"),
    [("X25519:X25519MLKEM768", "x25519"), ("X25519MLKEM768:X25519", "X25519MLKEM768")],
)
def test_groups_list_server_preference_order(
    groups: str, expected: str, server_key_pem: str, server_chain_pem: str
) -> None:
    """The client offers both (OpenSSL's default list); with SSL_OP_CIPHER_SERVER_PREFERENCE
    (Node's honorCipherOrder) the server's order decides. Without it OpenSSL 4.0 follows
    the client's preference here, so the option matters."""
    sctx = server_context(server_key_pem, server_chain_pem)
    sctx.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)
    ext.set_groups_list(sctx._context, groups)
    client, _ = connect(client_context(), sctx)
    assert client.get_group_name() == expected


def test_groups_list_rejects_unknown(server_key_pem: str, server_chain_pem: str) -> None:
    ctx = server_context(server_key_pem, server_chain_pem)
    with pytest.raises(ValueError, match="rejected groups list 'nope:X25519'"):
        ext.set_groups_list(ctx._context, "nope:X25519")
    with pytest.raises(ValueError):
        ext.set_groups_list(ctx._context, "")
    with pytest.raises(TypeError):
        ext.set_groups_list(ctx._context, b"X25519")  # type: ignore[arg-type]


# --- NPN ---------------------------------------------------------------------------------
def _npn_pair(
    server_protos: list[bytes], client_protos: list[bytes], key_pem: str, chain_pem: str
) -> tuple[SSL.Connection, SSL.Connection]:
    sctx = server_context(key_pem, chain_pem, version=TLS12)
    cctx = client_context(version=TLS12)
    ext.set_npn_advertised(sctx._context, server_protos)
    ext.set_npn_select(cctx._context, client_protos)
    gc.collect()  # the callbacks must survive: they are tied to the contexts
    return connect(cctx, sctx)


def test_npn_negotiates_common_protocol(server_key_pem: str, server_chain_pem: str) -> None:
    client, server = _npn_pair(
        [b"h2", b"http/1.1"], [b"spdy/3", b"http/1.1"], server_key_pem, server_chain_pem
    )
    assert ext.npn_negotiated(client._ssl) == b"http/1.1"
    assert ext.npn_negotiated(server._ssl) == b"http/1.1"


def test_npn_follows_server_order(server_key_pem: str, server_chain_pem: str) -> None:
    client, server = _npn_pair([b"a", b"b"], [b"b", b"a"], server_key_pem, server_chain_pem)
    assert ext.npn_negotiated(client._ssl) == b"a"
    assert ext.npn_negotiated(server._ssl) == b"a"


def test_npn_no_overlap_picks_client_first(server_key_pem: str, server_chain_pem: str) -> None:
    client, server = _npn_pair([b"h2"], [b"x/1", b"x/2"], server_key_pem, server_chain_pem)
    assert ext.npn_negotiated(client._ssl) == b"x/1"
    assert ext.npn_negotiated(server._ssl) == b"x/1"


def test_npn_absent_without_callbacks(server_key_pem: str, server_chain_pem: str) -> None:
    client, server = connect(
        client_context(version=TLS12), server_context(server_key_pem, server_chain_pem)
    )
    assert ext.npn_negotiated(client._ssl) is None
    assert ext.npn_negotiated(server._ssl) is None


def test_npn_protocol_validation() -> None:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    with pytest.raises(ValueError):
        ext.set_npn_advertised(ctx._context, [])
    with pytest.raises(ValueError):
        ext.set_npn_select(ctx._context, [b"x" * 256])
    with pytest.raises(TypeError):
        ext.set_npn_select(ctx._context, b"h2")  # type: ignore[arg-type]


# --- sessions ----------------------------------------------------------------------------
def test_get_session_cb_resumes_session_id_on_other_context(
    server_key_pem: str, server_chain_pem: str, ca_pem: str
) -> None:
    store: dict[bytes, bytes] = {}
    lookups: list[bytes] = []
    hello_ids: list[bytes] = []

    def remember(ssl: Any, session: Any) -> None:
        store[ext.session_id(session)] = ext.session_der(session)

    def lookup(ssl: Any, sid: bytes) -> bytes | None:
        lookups.append(sid)
        return store.get(sid)

    def on_hello(ssl: Any) -> int:
        hello_ids.append(ext.client_hello_session_id(ssl))
        return 1

    one = server_context(server_key_pem, server_chain_pem, version=TLS12, no_ticket=True)
    two = server_context(server_key_pem, server_chain_pem, version=TLS12, no_ticket=True)
    for ctx in (one, two):
        ctx.set_session_id(b"aiotls-test")
    ext.set_new_session_cb(one._context, remember)
    ext.set_get_session_cb(two._context, lookup)
    ext.set_client_hello_cb(two._context, on_hello)
    cctx = client_context(ca_pem, version=TLS12)

    first, _ = connect(cctx, one)
    assert len(store) == 1
    (sid,) = store
    assert len(sid) == 32
    session = first.get_session()

    resumed, server = connect(cctx, two, session)
    assert reused(resumed) and reused(server)
    assert lookups == [sid]
    assert hello_ids == [sid]

    # OpenSSL copied the looked-up session into two's internal cache: no second lookup.
    again, server = connect(cctx, two, session)
    assert reused(again) and lookups == [sid]

    # A third context whose store lacks the id does a full handshake.
    three = server_context(server_key_pem, server_chain_pem, version=TLS12, no_ticket=True)
    three.set_session_id(b"aiotls-test")

    def miss(ssl: Any, sid: bytes) -> None:
        lookups.append(sid)

    ext.set_get_session_cb(three._context, miss)
    fresh, server = connect(cctx, three, session)
    assert not reused(fresh) and not reused(server)
    assert lookups == [sid, sid]


def test_get_session_cb_failures_mean_full_handshake(
    server_key_pem: str, server_chain_pem: str
) -> None:
    one = server_context(server_key_pem, server_chain_pem, version=TLS12, no_ticket=True)
    two = server_context(server_key_pem, server_chain_pem, version=TLS12, no_ticket=True)
    cctx = client_context(version=TLS12)
    first, _ = connect(cctx, one)
    session = first.get_session()

    def fail(ssl: Any, sid: bytes) -> bytes | None:
        raise RuntimeError("store down")

    answers: list[Callable[[Any, bytes], bytes | None]] = [
        lambda ssl, sid: None,
        lambda ssl, sid: b"\x30\x03garbage",
        fail,
    ]
    for answer in answers:
        ext.set_get_session_cb(two._context, answer)
        client, server = connect(cctx, two, session)
        assert not reused(client) and not reused(server)


@pytest.mark.parametrize(
    ("version", "no_ticket", "on_server", "on_client"),
    [(TLS12, True, 1, 1), (TLS12, False, 0, 1), (TLS13, False, 2, 2)],
    ids=["TLSv1.2-session-id", "TLSv1.2-ticket", "TLSv1.3"],
)
def test_new_session_cb_counts(
    version: int,
    no_ticket: bool,
    on_server: int,
    on_client: int,
    server_key_pem: str,
    server_chain_pem: str,
) -> None:
    """OpenSSL calls it per cacheable session: a TLS 1.2 server with tickets caches none
    (empty session id), and a TLS 1.3 server sends two tickets by default."""
    server_seen: list[bytes] = []
    client_seen: list[bytes] = []
    sctx = server_context(server_key_pem, server_chain_pem, version=version, no_ticket=no_ticket)
    cctx = client_context(version=version)
    cctx.set_session_cache_mode(SSL.SESS_CACHE_CLIENT)
    ext.set_new_session_cb(sctx._context, lambda ssl, s: server_seen.append(ext.session_der(s)))
    ext.set_new_session_cb(cctx._context, lambda ssl, s: client_seen.append(ext.session_der(s)))
    connect(cctx, sctx)
    assert len(server_seen) == on_server
    assert len(client_seen) == on_client
    assert all(der.startswith(b"\x30") for der in server_seen + client_seen)


def test_new_session_cb_exception_is_contained(server_key_pem: str, server_chain_pem: str) -> None:
    calls: list[int] = []

    def boom(ssl: Any, session: Any) -> None:
        calls.append(1)
        raise RuntimeError("boom")

    sctx = server_context(server_key_pem, server_chain_pem, version=TLS12, no_ticket=True)
    ext.set_new_session_cb(sctx._context, boom)
    client, server = connect(client_context(version=TLS12), sctx)
    assert calls == [1]


@pytest.mark.parametrize("outcome", [0, "raise", 7])
def test_client_hello_cb_failure_aborts_handshake(
    outcome: object, server_key_pem: str, server_chain_pem: str
) -> None:
    def on_hello(ssl: Any) -> int:
        if outcome == "raise":
            raise RuntimeError("no")
        return outcome  # type: ignore[return-value]

    sctx = server_context(server_key_pem, server_chain_pem)
    ext.set_client_hello_cb(sctx._context, on_hello)
    with pytest.raises(SSL.Error):
        connect(client_context(), sctx)


def test_client_hello_session_id_tls13_compat(server_key_pem: str, server_chain_pem: str) -> None:
    seen: list[bytes] = []
    sctx = server_context(server_key_pem, server_chain_pem)

    def on_hello(ssl: Any) -> int:
        seen.append(ext.client_hello_session_id(ssl))
        return 1

    ext.set_client_hello_cb(sctx._context, on_hello)
    connect(client_context(), sctx)
    assert len(seen) == 1 and len(seen[0]) == 32  # middlebox-compatibility session id


# --- max send fragment -------------------------------------------------------------------
@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def test_max_send_fragment_limits_records(
    version: int, server_key_pem: str, server_chain_pem: str
) -> None:
    client, server = connect(
        client_context(version=version),
        server_context(server_key_pem, server_chain_pem, version=version),
        close=False,
    )
    payload = os.urandom(4000)

    server.send(payload)
    wire = server.bio_read(65536)
    assert [length for kind, length in records(wire)] and len(records(wire)) == 1
    client.bio_write(wire)
    assert client.recv(65536) == payload

    assert ext.set_max_send_fragment(server._ssl, 512) is True
    server.sendall(payload)
    wire = server.bio_read(65536)
    data_records = [n for kind, n in records(wire) if kind == RECORD_APPLICATION_DATA]
    assert len(data_records) == 8  # ceil(4000 / 512)
    assert all(n <= 512 + 256 for n in data_records)
    client.bio_write(wire)
    got = b""
    while len(got) < len(payload):
        got += client.recv(65536)
    assert got == payload


def test_max_send_fragment_range() -> None:
    conn = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    assert ext.set_max_send_fragment(conn._ssl, 511) is False
    assert ext.set_max_send_fragment(conn._ssl, 16385) is False
    assert ext.set_max_send_fragment(conn._ssl, -1) is False
    assert ext.set_max_send_fragment(conn._ssl, 16384) is True
    assert ext.set_max_send_fragment(conn._ssl, 512) is True
    with pytest.raises(TypeError):
        ext.set_max_send_fragment(conn._ssl, 1024.0)  # type: ignore[arg-type]


# --- peer tmp key and cipher names -------------------------------------------------------
@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ("X25519", ("X25519", 253)),
        ("P-256", ("EC", 256)),
        ("P-384", ("EC", 384)),
        ("ffdhe2048", ("DH", 2048)),
        ("X25519MLKEM768", None),  # KEM: the server sends a ciphertext, not a key
    ],
)
def test_peer_tmp_key_info_on_client(
    groups: str, expected: tuple[str, int] | None, server_key_pem: str, server_chain_pem: str
) -> None:
    sctx = server_context(server_key_pem, server_chain_pem)
    ext.set_groups_list(sctx._context, groups)
    cctx = client_context()
    client = SSL.Connection(cctx, None)
    assert ext.peer_tmp_key_info(client._ssl) is None  # before any handshake
    server = SSL.Connection(sctx, None)
    handshake(client, server)
    assert ext.peer_tmp_key_info(client._ssl) == expected


def test_peer_tmp_key_info_tls12_ecdhe(server_key_pem: str, server_chain_pem: str) -> None:
    sctx = server_context(server_key_pem, server_chain_pem, version=TLS12)
    ext.set_groups_list(sctx._context, "P-256")
    client, _ = connect(client_context(version=TLS12), sctx)
    assert ext.peer_tmp_key_info(client._ssl) == ("EC", 256)


def test_cipher_standard_name(server_key_pem: str, server_chain_pem: str) -> None:
    cctx = client_context(version=TLS12)
    cctx.set_cipher_list(b"ECDHE-ECDSA-AES128-GCM-SHA256")
    client = SSL.Connection(cctx, None)
    assert ext.cipher_standard_name(client._ssl) is None
    server = SSL.Connection(server_context(server_key_pem, server_chain_pem), None)
    handshake(client, server)
    assert client.get_cipher_name() == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert ext.cipher_standard_name(client._ssl) == "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
    assert ext.cipher_standard_name(server._ssl) == "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"

    client, _ = connect(client_context(), server_context(server_key_pem, server_chain_pem))
    assert ext.cipher_standard_name(client._ssl) == client.get_cipher_name()  # TLS 1.3 names


# --- per-certificate chains --------------------------------------------------------------
def test_add_chain_cert_attaches_to_current_certificate() -> None:
    root = trustme.CA()
    rsa_ca = root.create_child_ca(key_type=trustme.KeyType.RSA)
    ec_ca = root.create_child_ca(key_type=trustme.KeyType.ECDSA)
    rsa_leaf = rsa_ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)
    ec_leaf = ec_ca.issue_cert("localhost", key_type=trustme.KeyType.ECDSA)

    sctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    for leaf, issuer in ((rsa_leaf, rsa_ca), (ec_leaf, ec_ca)):
        key, certs = _load(leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes())
        sctx.use_certificate(certs[0])
        sctx.use_privatekey(key)
        intermediate = x509.load_pem_x509_certificate(issuer.cert_pem.bytes())
        x509_obj = crypto.X509.from_cryptography(intermediate)
        ext.add_chain_cert(sctx._context, x509_obj._x509)
        del x509_obj
    gc.collect()  # OpenSSL holds its own reference ("add1")

    root_pem = root.cert_pem.bytes().decode()
    for cipher, leaf_ca in (
        (b"ECDHE-RSA-AES128-GCM-SHA256", rsa_ca),
        (b"ECDHE-ECDSA-AES128-GCM-SHA256", ec_ca),
    ):
        cctx = client_context(root_pem, version=TLS12)
        cctx.set_cipher_list(cipher)
        client, _ = connect(cctx, sctx)
        chain = client.get_peer_cert_chain(as_cryptography=True)
        assert chain is not None and len(chain) == 2
        expected_issuer = x509.load_pem_x509_certificate(leaf_ca.cert_pem.bytes())
        assert chain[1] == expected_issuer
        assert chain[0].issuer == expected_issuer.subject
        assert lib.SSL_get_verify_result(client._ssl) == 0  # verified up to the root


# --- bookkeeping -------------------------------------------------------------------------
def test_missing_symbol_disables_only_its_features(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ext, "_resolver", None)
    resolver = ext._get_resolver()
    del resolver._values["SSL_select_next_proto"]
    feats = ext.features()
    assert feats["npn"] is False
    assert all(v for k, v in feats.items() if k != "npn")
    with pytest.raises(TLSFeatureUnavailable, match="SSL_select_next_proto"):
        ext.require("npn", "npn_protocols")
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    with pytest.raises(TLSFeatureUnavailable, match="SSL_select_next_proto"):
        ext.set_npn_select(ctx._context, [b"h2"])


def test_callbacks_live_exactly_as_long_as_their_context() -> None:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ext.set_new_session_cb(ctx._context, lambda ssl, s: None)
    ext.set_npn_advertised(ctx._context, [b"h2"])
    held = ext._keepalive[ctx._context]
    assert set(held) == {"new_session", "npn_advertised"}
    before = len(ext._keepalive)
    del ctx, held
    gc.collect()
    assert len(ext._keepalive) == before - 1
