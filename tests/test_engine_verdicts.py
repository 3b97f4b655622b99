"""The sans-I/O engine holds Node's rules for accepting a server: chain, identity, DH size.

Two engines pump bytes into each other in memory; nothing else judges the peer.
"""

from __future__ import annotations

import pytest
import trustme
from parity import FFDHE2048_P, Pki, dh_pem, issue
from test_engine import pump

import aiotls
from aiotls import TLSCertificateError, TLSEngine, TLSError

TLS12 = {"max_version": "TLSv1.2"}


@pytest.fixture(scope="module")
def server(ca: trustme.CA) -> aiotls.SecureContext:
    return aiotls.create_secure_context(**issue(ca).identity())


def client_ctx(ca: trustme.CA, **options: object) -> aiotls.SecureContext:
    return aiotls.create_secure_context(ca=ca.cert_pem.bytes(), **options)


def handshake(server_ctx: aiotls.SecureContext, client: TLSEngine) -> tuple[TLSEngine, TLSEngine]:
    peer = TLSEngine(server_ctx, server_side=True)
    pump(client, peer)
    return client, peer


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_good_server_is_authorized(server, ca: trustme.CA, version: str) -> None:
    ctx = client_ctx(ca, max_version=version)
    client, _ = handshake(server, TLSEngine(ctx, server_hostname="localhost"))
    assert client.handshake_complete
    assert (client.authorized, client.authorization_error) == (True, None)


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_wrong_host_name_is_refused(server, ca: trustme.CA, version: str) -> None:
    client = TLSEngine(client_ctx(ca, max_version=version), server_hostname="evil.test")
    peer = TLSEngine(server, server_side=True)
    with pytest.raises(TLSCertificateError) as info:
        pump(client, peer)
    assert info.value.code == "ERR_TLS_CERT_ALTNAME_INVALID" and info.value.host == "evil.test"
    assert (client.authorized, client.authorization_error) == (
        False,
        "ERR_TLS_CERT_ALTNAME_INVALID",
    )
    assert not client.handshake_complete
    if version == "TLSv1.3":  # our Finished never left: the server never completed either
        assert not peer.handshake_complete
    with pytest.raises(TLSCertificateError):  # the refusal stands
        client.receive_data(b"")


def test_untrusted_chain_is_refused(server) -> None:
    client = TLSEngine(client_ctx(trustme.CA()), server_hostname="localhost")
    with pytest.raises(TLSCertificateError) as info:
        handshake(server, client)
    assert info.value.code == "UNABLE_TO_VERIFY_LEAF_SIGNATURE"
    assert "unable to verify the first certificate" in str(info.value)
    assert client.authorization_error == "UNABLE_TO_VERIFY_LEAF_SIGNATURE"


@pytest.mark.parametrize("reject_unauthorized", [True, False])
def test_small_dh_prime_is_refused(reject_unauthorized: bool) -> None:
    """Node's minDHSize, whatever reject_unauthorized says."""
    rsa = issue(trustme.CA(key_type=trustme.KeyType.RSA), trustme.KeyType.RSA)
    server = aiotls.create_secure_context(**rsa.identity(), dhparam=dh_pem(FFDHE2048_P))
    ctx = aiotls.create_secure_context(
        ca=rsa.ca_pem, ciphers="DHE-RSA-AES128-GCM-SHA256", ecdh_curve="X25519:P-256",
        reject_unauthorized=reject_unauthorized, **TLS12,
    )  # fmt: skip
    client = TLSEngine(ctx, server_hostname="localhost", min_dh_size=3072)
    with pytest.raises(TLSError) as info:
        handshake(server, client)
    assert info.value.code == "ERR_TLS_DH_PARAM_SIZE"
    assert "2048" in str(info.value) and "3072" in str(info.value)
    ok, _ = handshake(server, TLSEngine(ctx, server_hostname="localhost", min_dh_size=2048))
    assert ok.handshake_complete and ok.get_ephemeral_key_info() == {"type": "DH", "size": 2048}


def test_unauthorized_server_goes_on_without_reject(server, ca: trustme.CA) -> None:
    ctx = client_ctx(ca, reject_unauthorized=False)
    client, _ = handshake(server, TLSEngine(ctx, server_hostname="evil.test"))
    assert client.handshake_complete
    assert (client.authorized, client.authorization_error) == (
        False,
        "ERR_TLS_CERT_ALTNAME_INVALID",
    )


def test_plain_check_server_identity_runs_in_the_engine(server, ca: trustme.CA) -> None:
    seen: list[tuple[str, str]] = []

    def check(host: str, cert: dict) -> None:
        seen.append((host, cert["subjectaltname"]))

    def refuse(host: str, cert: dict) -> None:
        raise ValueError("pinned certificate differs")

    ctx = client_ctx(ca)
    client, _ = handshake(
        server, TLSEngine(ctx, server_hostname="a.test", check_server_identity=check)
    )
    assert client.authorized and seen == [("a.test", seen[0][1])]
    assert "DNS:localhost" in seen[0][1]
    client = TLSEngine(ctx, server_hostname="localhost", check_server_identity=refuse)
    with pytest.raises(TLSCertificateError, match="pinned certificate differs") as info:
        handshake(server, client)
    assert info.value.code == "ERR_TLS_CERT_ALTNAME_INVALID"


@pytest.mark.parametrize("accept", [True, False])
async def test_async_check_server_identity_pauses_the_handshake(
    server, ca: trustme.CA, accept: bool
) -> None:
    calls: list[str] = []

    async def check(host: str, cert: dict) -> None:
        calls.append(host)
        if not accept:
            raise ValueError("not this one")

    ctx = client_ctx(ca, min_version="TLSv1.3")
    client = TLSEngine(ctx, server_hostname="localhost", check_server_identity=check)
    client, peer = handshake(server, client)
    assert client.handshake_paused and client.pause_reason == "server_identity"
    assert not client.handshake_complete and not peer.handshake_complete  # Finished held
    assert client.identity_check is not None
    try:
        outcome: object = await client.identity_check
    except ValueError as exc:
        outcome = exc
    client.finish_identity_check(outcome)
    if accept:
        assert client.resume()
        pump(client, peer)
        assert client.authorized and peer.handshake_complete
    else:
        with pytest.raises(TLSCertificateError, match="not this one"):
            client.resume()
        assert client.authorization_error == "ERR_TLS_CERT_ALTNAME_INVALID"
    assert calls == ["localhost"]


def test_a_client_needs_a_name_to_check(server, ca: trustme.CA) -> None:
    ctx = client_ctx(ca)
    with pytest.raises(ValueError, match="server_hostname"):
        TLSEngine(ctx)
    # "" is the explicit opt-out: no SNI, no identity check, never authorized.
    client, peer = handshake(server, TLSEngine(ctx, server_hostname=""))
    assert client.handshake_complete and peer.servername is None
    assert (client.authorized, client.authorization_error) == (False, "ERR_TLS_NO_SERVERNAME")
    lenient = client_ctx(ca, reject_unauthorized=False)
    client, _ = handshake(server, TLSEngine(lenient))
    assert (client.authorized, client.authorization_error) == (False, "ERR_TLS_NO_SERVERNAME")


def exchange(a: TLSEngine, b: TLSEngine) -> None:
    """pump() for established engines: post-handshake messages are processed by read()."""
    for _ in range(10):
        pump(a, b)
        a.read()
        b.read()


def test_renegotiation_keeps_the_server_certificate(server, ca: trustme.CA) -> None:
    """A server that presents another certificate in a renegotiation is refused."""
    ctx = client_ctx(ca, **TLS12)
    client = TLSEngine(ctx, server_hostname="localhost")
    peer = TLSEngine(server, server_side=True, allow_renegotiation=True)
    pump(client, peer)
    client.renegotiate()
    exchange(client, peer)
    assert not client.renegotiating and client.authorized
    other = aiotls.create_secure_context(**Pki.of(ca, ca.issue_cert("localhost")).identity())
    peer.set_context(other)
    client.renegotiate()
    with pytest.raises(TLSCertificateError) as info:
        exchange(client, peer)
    assert info.value.code == "ERR_TLS_SERVER_CERT_CHANGED"
    assert (client.authorized, client.authorization_error) == (
        False,
        "ERR_TLS_SERVER_CERT_CHANGED",
    )


def test_server_hooks_are_given_when_the_engine_is_built(server, ca: trustme.CA) -> None:
    """alpn_select and on_renegotiation are constructor arguments, like the other hooks."""
    offers: list[list[bytes]] = []
    refusal = TLSError("not now", code="ERR_TEST_RENEGOTIATION")

    def select(offered: list[bytes]) -> bytes:
        offers.append(offered)
        return offered[-1]

    ctx = client_ctx(ca, alpn_protocols=["h2", "http/1.1"], **TLS12)
    client = TLSEngine(ctx, server_hostname="localhost")
    peer = TLSEngine(
        server,
        server_side=True,
        allow_renegotiation=True,
        alpn_select=select,
        on_renegotiation=lambda: refusal,
    )
    pump(client, peer)
    assert offers == [[b"h2", b"http/1.1"]]
    assert client.alpn_protocol == "http/1.1"
    client.renegotiate()
    with pytest.raises(TLSError) as info:
        exchange(client, peer)
    assert info.value is refusal
