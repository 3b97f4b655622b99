"""Peer verification, bad options named clearly, and the pausable handshake (SNI)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import trustme
from util import echo, tls_server

import aiotls
from aiotls import options
from aiotls.context import option_names


async def test_unknown_ca_is_refused_with_its_verify_name(server_ctx) -> None:
    async with tls_server(echo, server_ctx) as (_, port):
        with pytest.raises(aiotls.TLSCertificateError) as info:
            await aiotls.open_connection(
                "127.0.0.1", port, ca=trustme.CA().cert_pem.bytes(), servername="localhost"
            )
        assert info.value.code in {
            "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
            "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
        }


async def test_hostname_mismatch(server_ctx, ca_pem: str) -> None:
    async with tls_server(echo, server_ctx) as (_, port):
        with pytest.raises(aiotls.TLSCertificateError) as info:
            await aiotls.open_connection("127.0.0.1", port, ca=ca_pem, servername="evil.test")
        assert info.value.code == "ERR_TLS_CERT_ALTNAME_INVALID"
        assert info.value.host == "evil.test"
        # Not rejecting: the connection opens and says why it is not authorized.
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, ca=ca_pem, servername="evil.test", reject_unauthorized=False
        )
        tls = writer.get_extra_info("tls")
        assert not tls.authorized and tls.authorization_error == "ERR_TLS_CERT_ALTNAME_INVALID"
        writer.close()


async def test_ip_host_checks_ip_san_and_sends_no_sni(server_ctx, ca_pem: str) -> None:
    names: list[str | None] = []
    async with tls_server(
        echo, server_ctx, on_secure_connection=lambda t: names.append(t.servername)
    ) as (_, port):
        reader, writer = await aiotls.open_connection("127.0.0.1", port, ca=ca_pem)
        assert writer.get_extra_info("tls").authorized
        writer.write(b"x")
        await reader.readexactly(1)
        assert names == [None]
        writer.close()


async def test_client_certificates(
    server_key_pem: str, server_chain_pem: str, ca_pem: str, client_cert: trustme.LeafCert
) -> None:
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, ca=ca_pem, request_cert=True
    )
    seen: list[aiotls.TLSTransport] = []
    async with tls_server(echo, ctx, on_secure_connection=seen.append) as (_, port):
        reader, writer = await aiotls.open_connection(
            "127.0.0.1",
            port,
            ca=ca_pem,
            servername="localhost",
            key=client_cert.private_key_pem.bytes(),
            cert=b"".join(b.bytes() for b in client_cert.cert_chain_pems),
        )
        writer.write(b"x")
        await reader.readexactly(1)
        assert seen[0].authorized and seen[0].get_peer_certificate()["subject"]["CN"] == "client"
        writer.close()
        # No certificate at all: refused in the handshake.
        with pytest.raises((aiotls.TLSError, ConnectionError)):
            r2, w2 = await aiotls.open_connection(
                "127.0.0.1", port, ca=ca_pem, servername="localhost"
            )
            await r2.read()  # TLS 1.3: the refusal arrives after the client's Finished


async def test_async_sni_callback_pauses_the_handshake(
    server_ctx, ca: trustme.CA, ca_pem: str
) -> None:
    other = ca.issue_cert("other.test")
    other_ctx = aiotls.create_secure_context(
        key=other.private_key_pem.bytes(),
        cert=b"".join(b.bytes() for b in other.cert_chain_pems),
    )

    async def sni(name: str | None) -> aiotls.SecureContext | None:
        await asyncio.sleep(0.05)  # the handshake waits; the loop does not
        return other_ctx if name == "other.test" else None

    async with tls_server(echo, server_ctx, sni_callback=sni) as (_, port):
        results = await asyncio.gather(
            *[
                aiotls.open_connection("127.0.0.1", port, ca=ca_pem, servername=name)
                for name in ("other.test", "localhost") * 10
            ]
        )
        for (_, writer), name in zip(results, ("other.test", "localhost") * 10, strict=True):
            san = writer.get_extra_info("tls").get_peer_certificate()["subjectaltname"]
            assert f"DNS:{name}" in san
            writer.close()


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        ({"ciphers": "NOPE-CIPHER"}, aiotls.TLSConfigError, "ciphers"),
        ({"ciphers": 3}, TypeError, "ciphers"),
        ({"min_version": "TLSv9"}, aiotls.TLSConfigError, "min_version"),
        ({"key": "not a key", "cert": "not a cert"}, ValueError, "key"),
        ({"request_cert": "yes"}, TypeError, "request_cert"),
        ({"alpn_protocols": "h2"}, TypeError, "alpn_protocols"),
        ({"bogus_option": 1}, TypeError, "bogus_option"),
        ({"ticket_keys": b"short"}, aiotls.TLSConfigError, "ticket_keys"),
        ({"secure_protocol": "SSLv3_method"}, aiotls.TLSConfigError, "secure_protocol"),
        (
            {"secure_protocol": "TLSv1_2_method", "min_version": "TLSv1.2"},
            ValueError,
            "conflict|combined",
        ),
        ({"ecdh_curve": "no-such-curve"}, aiotls.TLSConfigError, "ecdh_curve"),
    ],
)
def test_bad_context_options_name_the_option(options, error, names) -> None:
    with pytest.raises(error, match=names):
        aiotls.create_secure_context(**options)


def test_wrong_passphrase_and_mismatched_key(ca: trustme.CA, server_cert: trustme.LeafCert) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(server_cert.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    chain = b"".join(b.bytes() for b in server_cert.cert_chain_pems)
    aiotls.create_secure_context(key=encrypted, cert=chain, passphrase="secret")
    with pytest.raises(aiotls.TLSConfigError, match="key"):
        aiotls.create_secure_context(key=encrypted, cert=chain, passphrase="wrong")
    other = ca.issue_cert("other.test").private_key_pem.bytes()
    with pytest.raises(aiotls.TLSConfigError, match="key values mismatch"):
        aiotls.create_secure_context(key=other, cert=chain)


async def test_bad_connection_options_raise_at_the_call(client_ctx) -> None:
    with pytest.raises(ValueError, match="handshake_timeout"):
        await aiotls.open_connection("127.0.0.1", 9, context=client_ctx, handshake_timeout=-1)
    with pytest.raises(TypeError, match="shutdown_timeout"):
        await aiotls.open_connection("127.0.0.1", 9, context=client_ctx, shutdown_timeout="1")
    with pytest.raises(TypeError, match="sni_callback"):
        await aiotls.open_connection("127.0.0.1", 9, context=client_ctx, sni_callback=print)
    with pytest.raises(TypeError, match="context"):
        await aiotls.start_server(echo, "127.0.0.1", 0, context="nope")


CHECKED = [name for name, opt in options.CONNECTION_SPECS.items() if opt.check is not None]
SERVER_ONLY = option_names(options.ServerOptions) - option_names(options.ClientOptions)


@pytest.mark.parametrize("name", CHECKED)
def test_each_connection_option_is_checked_by_its_table_entry(name: str, client_ctx) -> None:
    """split() validates every option through the checker its Opt names, at the call."""
    with pytest.raises(TypeError, match=f"^{name}: expected"):
        options.split({name: object()}, server_side=name in SERVER_ONLY, context=client_ctx)


def test_connection_options_fields_follow_the_table() -> None:
    """ConnectionOptions has a field per checked option, with the table's default, and
    the fields split() derives; sslkeylogfile is folded into on_keylog."""
    fields = {f.name: f.default for f in dataclasses.fields(options.ConnectionOptions)}
    table = {name: options.CONNECTION_SPECS[name].default for name in CHECKED}
    del table["sslkeylogfile"]
    assert fields == {**table, "server_side": False, "alpn_callback": None, "ocsp_stapler": None}


def test_context_is_immutable(client_ctx) -> None:
    with pytest.raises(AttributeError):
        client_ctx.request_cert = True


async def test_user_check_server_identity_replaces_the_default(server_ctx, ca_pem: str) -> None:
    calls: list[str] = []

    def accept_all(host: str, cert: dict) -> None:
        calls.append(host)

    def broken(host: str, cert: dict) -> None:
        raise ValueError("policy says no")

    async with tls_server(echo, server_ctx) as (_, port):
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, ca=ca_pem, servername="evil.test", check_server_identity=accept_all
        )
        assert calls == ["evil.test"] and writer.get_extra_info("tls").authorized
        writer.close()
        with pytest.raises(aiotls.TLSCertificateError, match="policy says no"):
            await aiotls.open_connection(
                "127.0.0.1", port, ca=ca_pem, servername="localhost", check_server_identity=broken
            )


async def test_detailed_peer_certificate_links_up_to_the_root(ca: trustme.CA) -> None:
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert("localhost")
    ctx = aiotls.create_secure_context(
        key=leaf.private_key_pem.bytes(), cert=b"".join(b.bytes() for b in leaf.cert_chain_pems)
    )
    async with tls_server(echo, ctx) as (_, port):
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, ca=ca.cert_pem.bytes(), servername="localhost"
        )
        cert = writer.get_extra_info("tls").get_peer_certificate(detailed=True)
        subjects = []
        while cert["issuerCertificate"] is not cert:
            subjects.append(cert["subject"]["OU"])
            cert = cert["issuerCertificate"]
        assert len(subjects) == 2 and "CA" in subjects[1]  # leaf, intermediate, then root
        assert cert["ca"] and "CA" in cert["subject"]["OU"]
        writer.close()


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_lookup_replaces_name_resolution(server_ctx, ca_pem: str, asynchronous: bool) -> None:
    """lookup is shaped like loop.getaddrinfo; SNI and the identity check keep the host name."""
    asked: list[str] = []

    def resolve(host: str, port: int, **kw: object) -> list[tuple]:
        asked.append(host)
        return [(2, 1, 6, "", ("127.0.0.1", port))]

    async def resolve_async(host: str, port: int, **kw: object) -> list[tuple]:
        return resolve(host, port, **kw)

    async with tls_server(echo, server_ctx) as (_, port):
        reader, writer = await aiotls.open_connection(
            "example.test", port, ca=ca_pem, lookup=resolve_async if asynchronous else resolve
        )
        tls = writer.get_extra_info("tls")
        assert asked == ["example.test"] and tls.authorized and tls.servername == "example.test"
        writer.close()
