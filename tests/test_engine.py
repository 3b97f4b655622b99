"""TLSEngine in memory: two engines pumping bytes into each other are a TLS connection."""

from __future__ import annotations

import hashlib

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiotls
from aiotls import TLSEngine, TLSError


@pytest.fixture(scope="module")
def contexts(
    ca: trustme.CA, server_key_pem: str, server_chain_pem: str, ca_pem: str
) -> tuple[aiotls.SecureContext, aiotls.SecureContext]:
    server = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, alpn_protocols=["h2", "http/1.1"]
    )
    client = aiotls.create_secure_context(ca=ca_pem, alpn_protocols=["http/1.1"])
    return server, client


def pump(a: TLSEngine, b: TLSEngine) -> None:
    """Move bytes both ways until neither side has anything to send."""
    moved = True
    while moved:
        moved = False
        for src, dst in ((a, b), (b, a)):
            data = src.data_to_send()
            if data:
                dst.receive_data(data)
                moved = True


def connect(
    server_ctx: aiotls.SecureContext, client_ctx: aiotls.SecureContext, **server_kw: bool
) -> tuple[TLSEngine, TLSEngine]:
    client = TLSEngine(client_ctx, server_hostname="localhost")
    server = TLSEngine(server_ctx, server_side=True, **server_kw)
    client.do_handshake()
    pump(client, server)
    return client, server


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_handshake_and_data(contexts, ca_pem: str, version: str) -> None:
    server_ctx, _ = contexts
    client_ctx = aiotls.create_secure_context(ca=ca_pem, max_version=version, alpn_protocols=["h2"])
    client, server = connect(server_ctx, client_ctx)
    assert client.handshake_complete and server.handshake_complete
    assert client.get_protocol() == server.get_protocol() == version
    assert client.alpn_protocol == server.alpn_protocol == "h2"
    assert client.verify_error is None
    assert server.servername == "localhost"
    client.send(b"ping" * 10_000)
    pump(client, server)
    assert server.read() == b"ping" * 10_000
    server.send(b"pong")
    pump(client, server)
    assert client.read() == b"pong"
    client.close()
    pump(client, server)
    assert server.read() == b""
    assert server.close_notify_received


def test_first_data_to_send_is_client_hello(contexts) -> None:
    """DESIGN.md: a client's first data_to_send() yields its ClientHello, no other call."""
    _, client_ctx = contexts
    record = TLSEngine(client_ctx, server_hostname="localhost").data_to_send()
    assert record[0] == 22 and record[5] == 1  # handshake record, ClientHello


def test_send_before_handshake_raises(contexts) -> None:
    _, client_ctx = contexts
    with pytest.raises(TLSError) as info:
        TLSEngine(client_ctx, server_hostname="localhost").send(b"too early")
    assert info.value.code == "ERR_TLS_NOT_READY"


def test_pause_for_hook_and_resume_with_another_context(
    contexts, ca: trustme.CA, ca_pem: str
) -> None:
    """The cert callback pauses after ClientHello; SNI is readable; a swapped context wins."""
    server_ctx, client_ctx = contexts
    other = ca.issue_cert("other.test")
    other_ctx = aiotls.create_secure_context(
        key=other.private_key_pem.bytes(),
        cert=b"".join(b.bytes() for b in other.cert_chain_pems),
    )
    client = TLSEngine(client_ctx, server_hostname="other.test")
    server = TLSEngine(server_ctx, server_side=True, pause_handshake=True)
    client.do_handshake()
    pump(client, server)
    assert server.handshake_paused and not server.handshake_complete
    assert server.servername == "other.test"
    server.set_context(other_ctx)
    server.resume()
    pump(client, server)
    assert client.handshake_complete and server.handshake_complete
    peer = client.get_peer_x509_certificate()
    assert peer is not None
    assert peer == _leaf(other)


def _leaf(cert: trustme.LeafCert):
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())


def test_client_reads_the_verify_result_after_the_handshake(contexts) -> None:
    """Like Node, a client completes the handshake and judges the chain afterwards."""
    server_ctx, _ = contexts
    lenient = aiotls.create_secure_context(
        ca=trustme.CA().cert_pem.bytes(), reject_unauthorized=False
    )
    client = TLSEngine(lenient, server_hostname="localhost")
    server = TLSEngine(server_ctx, server_side=True)
    pump(client, server)
    assert client.handshake_complete
    assert client.verify_error == "UNABLE_TO_VERIFY_LEAF_SIGNATURE"
    assert (client.authorized, client.authorization_error) == (
        False,
        "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    )


def test_refused_client_certificate_sends_alert_and_names_error(
    server_key_pem: str, server_chain_pem: str, ca_pem: str
) -> None:
    """A server that requires a certificate refuses in the handshake, with an alert."""
    server_ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, ca=ca_pem, request_cert=True,
        max_version="TLSv1.2",
    )  # fmt: skip
    stranger = trustme.CA().issue_cert("stranger")
    client_ctx = aiotls.create_secure_context(
        ca=ca_pem,
        key=stranger.private_key_pem.bytes(),
        cert=stranger.cert_chain_pems[0].bytes(),
    )
    client = TLSEngine(client_ctx, server_hostname="localhost")
    server = TLSEngine(server_ctx, server_side=True)
    client.do_handshake()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    with pytest.raises(aiotls.TLSCertificateError) as info:
        server.receive_data(client.data_to_send())
    assert info.value.code in {
        "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
        "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    }
    alert = server.data_to_send()
    assert alert and alert[0] == 21  # the fatal alert is there to be flushed
    with pytest.raises(TLSError):
        client.receive_data(alert)


@pytest.mark.parametrize(
    ("junk", "alert"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),  # OpenSSL answers HTTP with no alert
        (b"\x16\x03\x01\x00\x05hello", True),  # a handshake record holding garbage
    ],
)
def test_junk_is_a_tls_error_with_its_alert(contexts, junk: bytes, alert: bool) -> None:
    server_ctx, _ = contexts
    server = TLSEngine(server_ctx, server_side=True)
    with pytest.raises(TLSError) as info:
        server.receive_data(junk)
    assert info.value.code.startswith("ERR_SSL_")
    assert (server.data_to_send()[:1] == b"\x15") is alert  # fatal alert queued to send


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in [*points, len(data)]:
        if p > start:
            pieces.append(data[start:p])
            start = p
    return pieces


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    messages=st.lists(st.binary(min_size=1, max_size=40_000), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=30),
    interleave=st.lists(st.booleans(), min_size=1, max_size=50),
)
def test_arbitrary_splits_deliver_plaintext_whole_and_in_order(
    contexts, messages: list[bytes], cuts: list[int], interleave: list[bool]
) -> None:
    """Ciphertext cut anywhere and fed in any interleaving still yields the exact stream."""
    server_ctx, client_ctx = contexts
    client = TLSEngine(client_ctx, server_hostname="localhost")
    server = TLSEngine(server_ctx, server_side=True)
    client.do_handshake()
    to_server: list[bytes] = []
    to_client: list[bytes] = []
    received = {id(client): bytearray(), id(server): bytearray()}
    sent_by_client = b"".join(messages)
    sent_by_server = b"".join(reversed(messages))
    pending_c, pending_s = list(messages), list(reversed(messages))
    steps = 0
    while steps < 10_000:
        steps += 1
        for engine, queue in ((client, to_server), (server, to_client)):
            out = engine.data_to_send()
            if out:
                queue.extend(_split(out, cuts))
        flip = interleave[steps % len(interleave)]
        for engine, queue in ((server, to_server), (client, to_client))[:: 1 if flip else -1]:
            if queue:
                engine.receive_data(queue.pop(0))
                if engine.handshake_complete:
                    received[id(engine)] += engine.read()
        for engine, pending in ((client, pending_c), (server, pending_s)):
            if engine.handshake_complete and pending:
                engine.send(pending.pop(0))
        if (
            not to_server
            and not to_client
            and not pending_c
            and not pending_s
            and len(received[id(server)]) == len(sent_by_client)
            and len(received[id(client)]) == len(sent_by_server)
        ):
            break
    assert hashlib.sha256(received[id(server)]).digest() == hashlib.sha256(sent_by_client).digest()
    assert bytes(received[id(client)]) == sent_by_server


@pytest.mark.parametrize("released", [True, False])
def test_unclean_end_keeps_tls12_session_only_when_released(
    server_key_pem: str, server_chain_pem: str, ca_pem: str, released: bool
) -> None:
    """OpenSSL evicts a session whose connection is freed unshut; release() prevents it."""
    import gc

    server_ctx = aiotls.create_secure_context(
        key=server_key_pem,
        cert=server_chain_pem,
        secure_options=0x4000,  # no tickets
    )
    client_ctx = aiotls.create_secure_context(ca=ca_pem, max_version="TLSv1.2")
    client, server = connect(server_ctx, client_ctx)
    session = client.get_session()
    if released:
        server.release()  # else the SSL is freed with the engine, unshut
    del server
    gc.collect()
    again = TLSEngine(client_ctx, server_hostname="localhost", session=session)
    server2 = TLSEngine(server_ctx, server_side=True)
    again.do_handshake()
    pump(again, server2)
    assert again.session_reused is released


def test_oversized_record_is_a_clear_error(contexts) -> None:
    server_ctx, client_ctx = contexts
    client, server = connect(server_ctx, client_ctx)
    assert server.handshake_complete
    # An application-data record header claiming 18.5 KB: beyond TLS's 16 KiB + 256 limit.
    server.receive_data(b"\x17\x03\x03\x48\x44" + b"\x00" * 64)
    with pytest.raises(TLSError) as info:
        server.read()
    assert info.value.code.startswith("ERR_SSL_")
    assert server.data_to_send()  # the (TLS 1.3: encrypted) alert is there to send


def test_engine_has_the_node_getters(contexts) -> None:
    server_ctx, client_ctx = contexts
    client, server = connect(server_ctx, client_ctx)
    peer = client.get_peer_certificate(detailed=True)
    assert "DNS:localhost" in peer["subjectaltname"] and "issuerCertificate" in peer
    assert server.get_certificate()["fingerprint256"] == peer["fingerprint256"]
    assert server.get_peer_certificate() == {}  # the client sent none
    assert client.get_ephemeral_key_info()["name"] == "X25519MLKEM768"
