"""create_secure_context options, each shown on a real handshake over loopback (Node parity).

One test (or one parametrized family) per option of Node's ``tls.createSecureContext``:
key / passphrase, several key+cert pairs, pfx, ca, crl, ciphers / ciphersuites /
honor_cipher_order, ecdh_curve (with the post-quantum default and its fallback against
node 20 and openssl 3.0), dhparam and min_dh_size, versions and secure_protocol,
secure_options, session_id_context, session_timeout, npn_protocols and ticket_keys.
Each bad value must fail at create time with a clear error naming the option.

Intended differences from Node (documented where they show):
- a key whose algorithm differs from its certificate's is refused at create time
  ("no certificate assigned ... does not match"); node 20 accepts that pair and fails later;
- an expired CRL is refused at create time; node accepts it and fails each verification
  with CRL_HAS_EXPIRED;
- ``ticket_keys`` is OpenSSL's 80-byte layout; node's is 48 bytes (its own callback's format);
- ``get_ciphers()`` lists the TLS 1.3 suites enabled by default; node also lists the two CCM
  suites OpenSSL knows but does not enable (see test_get_ciphers_matches_node);
- ``DEFAULT_CIPHERS`` is Mozilla's "intermediate" TLS 1.2 list (AEAD + forward secrecy
  only), node's default also has CBC suites and "HIGH".
"""

from __future__ import annotations

import asyncio
import datetime
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dh
from cryptography.hazmat.primitives.serialization import pkcs12
from parity import (
    FFDHE2048_P,
    HOST,
    MODP1024_P,
    PEM,
    STEP,
    TLS12,
    VERSIONS,
    Pki,
    connected,
    dh_pem,
    error_code,
    issue,
    node_client,
    node_server,
    quiet_ffdh,
    refused,
    serving,
    session_of,
)
from peers import require, run_peer

import aiotls

pytestmark = pytest.mark.timeout(20)  # each network step is bounded by STEP (10 s)

PASSPHRASE = "correct horse battery staple"
OP_NO_TICKET = 0x4000  # SSL_OP_NO_TICKET


@pytest.fixture(scope="module")
def ec() -> Pki:
    return issue(trustme.CA())


@pytest.fixture(scope="module")
def rsa() -> Pki:
    return issue(trustme.CA(key_type=trustme.KeyType.RSA), trustme.KeyType.RSA)


@pytest.fixture(scope="module")
def ec_files(ec: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return ec.write(tmp_path_factory.mktemp("ec"))


@pytest.fixture(scope="module")
def rsa_files(rsa: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return rsa.write(tmp_path_factory.mktemp("rsa"))


@pytest.fixture(scope="module")
def dh2048() -> str:
    return dh_pem(FFDHE2048_P)


@pytest.fixture(scope="module")
def dh1024() -> str:
    return dh_pem(MODP1024_P)


@pytest.fixture(scope="module")
def dh512() -> str:
    with quiet_ffdh():
        return dh_pem(dh.generate_parameters(2, 512))  # small primes are quick to find


def encrypted(key_pem: str, passphrase: str) -> str:
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    return key.private_bytes(
        PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    ).decode()


# -- key, passphrase -----------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        "str",
        "bytes",
        "list",
        "passphrase",
        "passphrase-bytes",
        "passphrase-plain-key",
        "per-key",
        "per-key-wins",
    ],
)
async def test_key_forms_serve_their_certificate(form: str, ec: Pki) -> None:
    locked = encrypted(ec.key, PASSPHRASE)
    key_options: dict[str, Any] = {
        "str": {"key": ec.key},
        "bytes": {"key": ec.key.encode()},
        "list": {"key": [ec.key]},
        "passphrase": {"key": locked, "passphrase": PASSPHRASE},
        "passphrase-bytes": {"key": locked.encode(), "passphrase": PASSPHRASE.encode()},
        # A passphrase given with a plain key is ignored, as in Node.
        "passphrase-plain-key": {"key": ec.key, "passphrase": PASSPHRASE},
        "per-key": {"key": [{"pem": locked, "passphrase": PASSPHRASE}]},
        # The key's own passphrase is used, not the shared one (Node's rule).
        "per-key-wins": {"key": [{"pem": locked, "passphrase": PASSPHRASE}], "passphrase": "no"},
    }[form]
    async with (
        serving(cert=ec.chain, **key_options) as served,
        connected(served.port, ca=ec.ca_pem) as tls,
    ):
        assert tls.authorized
        assert tls.get_peer_certificate()["fingerprint256"] == ec.fingerprint256


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ("missing", r"(?i)^key: .*password was not given"),
        ("wrong", r"^key: .*bad passphrase"),
        ("per-key-wrong", r"^key: .*bad passphrase"),
    ],
)
def test_bad_passphrase_fails_at_create_time(form: str, message: str, ec: Pki) -> None:
    locked = encrypted(ec.key, PASSPHRASE)
    key_options: dict[str, Any] = {
        "missing": {"key": locked},
        "wrong": {"key": locked, "passphrase": "wrong"},
        # The shared passphrase is right, but the key's own (wrong) one wins.
        "per-key-wrong": {
            "key": [{"pem": locked, "passphrase": "wrong"}],
            "passphrase": PASSPHRASE,
        },
    }[form]
    with pytest.raises(aiotls.TLSConfigError, match=message) as info:
        aiotls.create_secure_context(cert=ec.chain, **key_options)
    assert isinstance(info.value, ValueError)


def test_key_of_wrong_type_is_a_type_error(ec: Pki) -> None:
    with pytest.raises(TypeError, match="key"):
        aiotls.create_secure_context(key=1234, cert=ec.chain)


# -- several key/cert pairs ----------------------------------------------------------


#: The ways to give an RSA and an ECDSA identity together (Node's test-tls-multi-key and
#: test-tls-multi-pfx): keys pair with certificates by public key, whatever the order.
MULTI_IDENTITY = {
    "key-cert": lambda rsa, ec: {"key": [rsa.key, ec.key], "cert": [rsa.chain, ec.chain]},
    "key-cert-swapped": lambda rsa, ec: {"key": [ec.key, rsa.key], "cert": [rsa.chain, ec.chain]},
    # One shared passphrase: it opens the pfx and is ignored for the plain EC key.
    "pfx-and-key-cert": lambda rsa, ec: {
        "pfx": pkcs12_of(rsa, PASSPHRASE), "passphrase": PASSPHRASE,
        "key": ec.key, "cert": ec.chain,
    },
    "pfx-list": lambda rsa, ec: {
        "pfx": [{"buf": pkcs12_of(rsa, PASSPHRASE), "passphrase": PASSPHRASE}, pkcs12_of(ec, None)]
    },
}  # fmt: skip


@pytest.mark.parametrize("given", MULTI_IDENTITY)
@pytest.mark.parametrize(
    ("client_cipher", "expected"),
    [("ECDHE-RSA-AES128-GCM-SHA256", "rsa"), ("ECDHE-ECDSA-AES128-GCM-SHA256", "ec")],
)
async def test_rsa_and_ecdsa_pairs_are_picked_by_cipher(
    client_cipher: str, expected: str, given: str, rsa: Pki, ec: Pki
) -> None:
    pkis = {"rsa": rsa, "ec": ec}
    async with (
        serving(**MULTI_IDENTITY[given](rsa, ec)) as served,
        connected(served.port, ca=[rsa.ca_pem, ec.ca_pem], ciphers=client_cipher, **TLS12) as tls,
    ):
        assert tls.authorized
        assert tls.get_cipher()["name"] == client_cipher
        peer = tls.get_peer_certificate()
        assert peer["fingerprint256"] == pkis[expected].fingerprint256
        assert ("modulus" in peer) == (expected == "rsa")
        assert ("asn1Curve" in peer) == (expected == "ec")
        # The server reports the certificate it actually used.
        assert served.accepted[0].get_certificate()["fingerprint256"] == peer["fingerprint256"]


def test_key_not_matching_cert_fails(rsa: Pki, ec: Pki) -> None:
    other = issue(rsa.ca, trustme.KeyType.RSA)
    with pytest.raises(aiotls.TLSConfigError, match=r"^key: key values mismatch"):
        aiotls.create_secure_context(key=other.key, cert=rsa.chain)
    # An RSA key with an EC certificate. (Node accepts that pair at create time and fails
    # at the handshake; aiotls refuses at once.)
    with pytest.raises(aiotls.TLSConfigError, match=r"^key: .*does not match"):
        aiotls.create_secure_context(key=rsa.key, cert=ec.chain)
    with pytest.raises(aiotls.TLSConfigError, match=r"^key: key #2 has no certificate"):
        aiotls.create_secure_context(key=[rsa.key, ec.key], cert=[rsa.chain])
    subject = rsa.cert.subject.rfc4514_string()
    with pytest.raises(aiotls.TLSConfigError, match=rf"^cert: no key given for .*{subject}"):
        aiotls.create_secure_context(key=[ec.key], cert=[rsa.chain, ec.chain])
    with pytest.raises(aiotls.TLSConfigError, match=r"^cert: no key given for"):
        aiotls.create_secure_context(cert=rsa.chain)
    with pytest.raises(aiotls.TLSConfigError, match=r"^key: key #1 has no certificate"):
        aiotls.create_secure_context(key=rsa.key)


# -- pfx -----------------------------------------------------------------------------


def pkcs12_of(pki: Pki | None, passphrase: str | None, *extra: x509.Certificate) -> bytes:
    """A PKCS#12 of ``pki``'s key and leaf (None: no key, no leaf) plus ``extra`` certificates;
    encrypted unless ``passphrase`` is None."""
    key = serialization.load_pem_private_key(pki.key.encode(), None) if pki else None
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase is not None
        else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(
        b"aiotls", key, pki.cert if pki else None, list(extra) or None,  # type: ignore[arg-type]
        encryption,
    )  # fmt: skip


async def test_pfx_with_passphrase_serves_its_certificate(ec: Pki) -> None:
    async with (
        serving(pfx=pkcs12_of(ec, PASSPHRASE), passphrase=PASSPHRASE) as served,
        connected(served.port, ca=ec.ca_pem) as tls,
    ):
        assert tls.authorized
        assert tls.get_peer_certificate()["fingerprint256"] == ec.fingerprint256


def test_bad_pfx_fails_clearly(ec: Pki) -> None:
    with pytest.raises(aiotls.TLSConfigError, match=r"^pfx: .*passphrase"):
        aiotls.create_secure_context(pfx=pkcs12_of(ec, PASSPHRASE), passphrase="wrong")
    keyless = pkcs12_of(None, PASSPHRASE, ec.cert)
    with pytest.raises(aiotls.TLSConfigError, match=r"^pfx: .*no private key"):
        aiotls.create_secure_context(pfx=keyless, passphrase=PASSPHRASE)
    with pytest.raises(TypeError, match="pfx"):
        aiotls.create_secure_context(pfx="not bytes", passphrase=PASSPHRASE)


# -- ca and crl ----------------------------------------------------------------------


@pytest.mark.parametrize("form", ["one-string", "list", "list-bytes"])
async def test_ca_several_pems(form: str, ec: Pki, rsa: Pki) -> None:
    stranger = trustme.CA().cert_pem.bytes().decode()
    ca = {
        "one-string": stranger + ec.ca_pem + rsa.ca_pem,
        "list": [stranger, ec.ca_pem, rsa.ca_pem],
        "list-bytes": [stranger.encode(), ec.ca_pem.encode(), rsa.ca_pem.encode()],
    }[form]
    for pki in (ec, rsa):
        async with serving(**pki.identity()) as served, connected(served.port, ca=ca) as tls:
            assert tls.authorized and tls.authorization_error is None


@pytest.fixture
def system_trust(ec: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``ec``'s CA the "system" trust store OpenSSL loads by default."""
    bundle = tmp_path / "system.pem"
    bundle.write_text(ec.ca_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))


@pytest.mark.usefixtures("system_trust")
async def test_ca_replaces_the_default_trust(ec: Pki) -> None:
    async with serving(**ec.identity()) as served:
        stranger = trustme.CA().cert_pem.bytes().decode()
        exc = await refused(served.port, ca=stranger)
        assert error_code(exc) in {
            "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
            "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
        }


@pytest.mark.usefixtures("system_trust")
async def test_without_ca_the_default_trust_is_used(ec: Pki) -> None:
    async with serving(**ec.identity()) as served, connected(served.port) as tls:
        assert tls.authorized


def crl_pem(
    ca: trustme.CA, revoked: list[int], *, next_update: datetime.timedelta = datetime.timedelta(1)
) -> str:
    """A CRL signed by ``ca`` revoking the given serial numbers."""
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(days=2))
        .next_update(now + next_update)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - datetime.timedelta(days=1))
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(PEM).decode()  # type: ignore[arg-type]


@pytest.mark.parametrize("version", list(VERSIONS))
async def test_crl_refuses_a_revoked_client_certificate(version: str, ec: Pki) -> None:
    good = Pki.of(ec.ca, ec.ca.issue_cert("good@example.test", common_name="good"))
    bad = Pki.of(ec.ca, ec.ca.issue_cert("bad@example.test", common_name="bad"))
    crl = crl_pem(ec.ca, [bad.cert.serial_number])
    async with serving(
        **ec.identity(), ca=ec.ca_pem, crl=crl, request_cert=True, reject_unauthorized=True
    ) as served:
        client = {"ca": ec.ca_pem, **VERSIONS[version]}
        async with connected(served.port, **good.identity(), **client):
            (accepted,) = served.accepted
            assert accepted.authorized
            assert accepted.get_peer_certificate()["subject"]["CN"] == "good"
        exc = await refused(served.port, **bad.identity(), **client)
        assert "REVOKED" in error_code(exc), exc  # the server's alert: certificate_revoked
        assert [error_code(e) for e in served.errors] == ["CERT_REVOKED"]
        assert len(served.accepted) == 1


async def test_crl_with_reject_unauthorized_false_reports_revocation(ec: Pki) -> None:
    bad = Pki.of(ec.ca, ec.ca.issue_cert("bad@example.test", common_name="bad"))
    crl = crl_pem(ec.ca, [bad.cert.serial_number])
    async with (
        serving(
            **ec.identity(), ca=ec.ca_pem, crl=crl, request_cert=True, reject_unauthorized=False
        ) as served,
        connected(served.port, **bad.identity(), ca=ec.ca_pem),
    ):
        (accepted,) = served.accepted
        assert not accepted.authorized
        assert accepted.authorization_error == "CERT_REVOKED"


def test_expired_crl_fails_at_create_time(ec: Pki) -> None:
    stale = crl_pem(ec.ca, [], next_update=-datetime.timedelta(hours=1))
    with pytest.raises(aiotls.TLSConfigError, match=r"^crl: .*expired"):
        aiotls.create_secure_context(ca=ec.ca_pem, crl=stale)
    with pytest.raises(aiotls.TLSConfigError, match=r"^crl: "):
        aiotls.create_secure_context(ca=ec.ca_pem, crl="not a CRL")


# -- ciphers, ciphersuites, honor_cipher_order ---------------------------------------

#: OpenSSL name -> (IANA name, Node's getCipher().version: the suite's *minimum* version).
SUITES = {
    "ECDHE-ECDSA-AES256-GCM-SHA384": ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLSv1.2"),
    "ECDHE-ECDSA-CHACHA20-POLY1305": ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLSv1.2"),
    "ECDHE-ECDSA-AES128-SHA": ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLSv1.0"),
}


@pytest.mark.parametrize("suite", list(SUITES))
async def test_ciphers_choose_the_tls12_suite(suite: str, ec: Pki) -> None:
    async with serving(**ec.identity(), ciphers=suite) as served:
        offer = ":".join(SUITES)  # the client offers all three
        async with connected(served.port, ca=ec.ca_pem, ciphers=offer, **TLS12) as tls:
            assert tls.get_tls_protocol() == "TLSv1.2"
            standard, version = SUITES[suite]
            expected = {"name": suite, "standardName": standard, "version": version}
            assert tls.get_cipher() == expected
            assert served.accepted[0].get_cipher() == expected
        # A client offering none of the server's suites cannot connect.
        others = ":".join(s for s in SUITES if s != suite)
        exc = await refused(served.port, ca=ec.ca_pem, ciphers=others, **TLS12)
        assert "HANDSHAKE_FAILURE" in error_code(exc), exc


@pytest.mark.parametrize("suite", ["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"])
async def test_ciphersuites_choose_the_tls13_suite(suite: str, ec: Pki) -> None:
    # `ciphers` does not touch TLS 1.3: only `ciphersuites` does.
    server = {"ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384", "ciphersuites": suite}
    async with (
        serving(**ec.identity(), **server) as served,
        connected(served.port, ca=ec.ca_pem) as tls,
    ):
        assert tls.get_cipher() == {"name": suite, "standardName": suite, "version": "TLSv1.3"}
        assert served.accepted[0].get_cipher() == tls.get_cipher()


@pytest.mark.parametrize("option", ["ciphers", "ciphersuites"])
def test_unknown_cipher_fails_with_no_cipher_match(option: str) -> None:
    with pytest.raises(aiotls.TLSConfigError, match=rf"^{option}: no cipher match"):
        aiotls.create_secure_context(**{option: "NOT-A-CIPHER"})
    with pytest.raises(TypeError, match=option):
        aiotls.create_secure_context(**{option: 42})


ORDERS = {  # (server's list, client's list), the same two suites in opposite orders
    "TLSv1.2": ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"),
    "TLSv1.3": ("TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"),
}


@pytest.mark.parametrize("version", list(ORDERS))
@pytest.mark.parametrize("honor", [None, True, False])
async def test_honor_cipher_order(version: str, honor: bool | None, ec: Pki) -> None:
    first, second = ORDERS[version]
    option = "ciphers" if version == "TLSv1.2" else "ciphersuites"
    server: dict[str, Any] = {option: f"{first}:{second}"}
    if honor is not None:
        server["honor_cipher_order"] = honor
    async with serving(**ec.identity(), **server) as served:
        client = {option: f"{second}:{first}", **VERSIONS[version]}
        async with connected(served.port, ca=ec.ca_pem, **client) as tls:
            # Default (None) and True: the server's order wins; False: the client's.
            assert tls.get_cipher()["name"] == (second if honor is False else first)
    with pytest.raises(TypeError, match="honor_cipher_order"):
        aiotls.create_secure_context(honor_cipher_order="yes")


async def test_get_ciphers_matches_node() -> None:
    node = require("node")
    script = "process.stdout.write(JSON.stringify(require('tls').getCiphers()) + '\\n')"
    async with run_peer(node, "-e", script) as peer:
        (line,) = await peer.wait_for_output(r"^(\[.*\])$")
        assert await peer.wait() == 0, str(peer)
    ours, theirs = aiotls.get_ciphers(), json.loads(line)
    assert ours == sorted(ours) and all(name == name.lower() for name in ours)
    # Intended difference: node appends every TLS 1.3 suite OpenSSL implements, aiotls the
    # ones enabled by default; the CCM suites are the rest (both names are accepted by
    # ciphersuites). Everything else is the same list.
    assert set(theirs) - set(ours) == {"tls_aes_128_ccm_8_sha256", "tls_aes_128_ccm_sha256"}
    assert set(ours) <= set(theirs)
    aiotls.create_secure_context(ciphersuites="TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256")


async def test_default_ciphers_are_in_force(ec: Pki) -> None:
    names = aiotls.DEFAULT_CIPHERS.split(":")
    assert {name.lower() for name in names} <= set(aiotls.get_ciphers())
    assert all("GCM" in name or "CHACHA20" in name for name in names)  # AEAD only
    assert aiotls.create_secure_context(ciphers=aiotls.DEFAULT_CIPHERS)
    async with serving(**ec.identity()) as served:
        async with connected(served.port, ca=ec.ca_pem, **TLS12) as tls:
            assert tls.get_cipher()["name"] in names
        # A suite outside the default list (CBC) is not accepted by a default server.
        exc = await refused(served.port, ca=ec.ca_pem, ciphers="ECDHE-ECDSA-AES128-SHA", **TLS12)
        assert "HANDSHAKE_FAILURE" in error_code(exc), exc


# -- ecdh_curve ----------------------------------------------------------------------


def group_of(tls: aiotls.TLSTransport) -> str | None:
    """The negotiated group, lower case: OpenSSL 4 spells X25519 "x25519" on TLS 1.2."""
    name = tls.engine.get_group_name()
    return None if name is None else name.lower()


#: ecdh_curve -> (OpenSSL's group name, Node's getEphemeralKeyInfo()), on TLS 1.2 and 1.3 alike.
CURVES = {
    "P-256": ("secp256r1", {"type": "ECDH", "name": "prime256v1", "size": 256}),
    "X25519": ("X25519", {"type": "ECDH", "name": "X25519", "size": 253}),
    "P-384:P-521": ("secp384r1", {"type": "ECDH", "name": "secp384r1", "size": 384}),
    "P-521:P-384": ("secp521r1", {"type": "ECDH", "name": "secp521r1", "size": 521}),
}


@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("curve", list(CURVES))
async def test_ecdh_curve_chooses_the_group(curve: str, version: str, ec: Pki) -> None:
    group, key_info = CURVES[curve]
    async with (
        serving(**ec.identity(), ecdh_curve=curve) as served,
        connected(served.port, ca=ec.ca_pem, **VERSIONS[version]) as tls,
    ):
        assert group_of(tls) == group_of(served.accepted[0]) == group.lower()
        assert tls.get_ephemeral_key_info() == key_info


@pytest.mark.parametrize(
    ("version", "group"), [("TLSv1.3", "X25519MLKEM768"), ("TLSv1.2", "X25519")]
)
@pytest.mark.parametrize("curve", [None, "auto", aiotls.DEFAULT_ECDH_CURVE])
async def test_default_ecdh_curve_is_post_quantum(
    curve: str | None, version: str, group: str, ec: Pki
) -> None:
    assert "X25519MLKEM768" in aiotls.DEFAULT_ECDH_CURVE
    server = {} if curve is None else {"ecdh_curve": curve}
    async with (
        serving(**ec.identity(), **server) as served,
        connected(served.port, ca=ec.ca_pem, **VERSIONS[version]) as tls,
    ):
        # A hybrid ML-KEM group is TLS 1.3 only; TLS 1.2 falls back to X25519.
        assert group_of(tls) == group_of(served.accepted[0]) == group.lower()


@pytest.mark.parametrize(
    "curve",
    [
        "P-999",
        "P-256:nope",
        ":",
        pytest.param(
            "",
        ),
    ],
)
def test_unknown_ecdh_curve_fails(curve: str) -> None:
    with pytest.raises(aiotls.TLSConfigError, match=r"^ecdh_curve: .*(unknown|unsupported)"):
        aiotls.create_secure_context(ecdh_curve=curve)


def test_ecdh_curve_of_wrong_type() -> None:
    with pytest.raises(TypeError, match="ecdh_curve"):
        aiotls.create_secure_context(ecdh_curve=["P-256"])


async def test_node_client_falls_back_to_x25519(ec: Pki, ec_files: dict[str, str]) -> None:
    # node 20 (OpenSSL 3.0) knows no ML-KEM: the default server settles on X25519.
    async with serving(**ec.identity()) as served:
        (report,) = await node_client(
            {"port": served.port, "servername": "localhost", "ca": ec_files["ca"]}
        )
        assert report["protocol"] == "TLSv1.3"
        assert report["ephemeralKeyInfo"] == {"type": "ECDH", "name": "X25519", "size": 253}
        assert group_of(served.accepted[0]) == "x25519"


async def test_aiotls_client_falls_back_to_x25519_with_node(
    ec: Pki, ec_files: dict[str, str]
) -> None:
    async with node_server({"key": ec_files["key"], "cert": ec_files["cert"]}) as node:
        async with connected(node.port, ca=ec.ca_pem) as tls:
            assert tls.get_tls_protocol() == "TLSv1.3"
            assert group_of(tls) == "x25519"
            assert tls.get_ephemeral_key_info() == {"type": "ECDH", "name": "X25519", "size": 253}
        (report,) = await node.reports()
        assert report["protocol"] == "TLSv1.3"


async def test_openssl_s_client_falls_back_to_x25519(ec: Pki, ec_files: dict[str, str]) -> None:
    openssl = require("openssl")
    async with serving(**ec.identity()) as served, run_peer(
        openssl, "s_client", "-connect", f"{HOST}:{served.port}", "-servername", "localhost",
        "-CAfile", ec_files["ca"], "-verify_return_error", "-brief",
    ) as client:  # fmt: skip
        (key,) = await client.wait_for_output(r"^(?:Server|Peer) Temp Key: (.*)$", stream="stderr")
        await client.feed(b"")  # stdin EOF: s_client closes and exits
        assert await client.wait(STEP) == 0, str(client)
        assert key == "X25519, 253 bits"
        assert group_of(served.accepted[0]) == "x25519"


async def test_aiotls_client_falls_back_to_x25519_with_s_server(
    ec: Pki, ec_files: dict[str, str]
) -> None:
    openssl = require("openssl")
    async with run_peer(
        openssl, "s_server", "-accept", f"{HOST}:0", "-naccept", "1",
        "-key", ec_files["key"], "-cert", ec_files["cert"],
    ) as server:  # fmt: skip
        (port,) = await server.wait_for_output(r"^ACCEPT .*:(\d+)$")
        async with connected(int(port), ca=ec.ca_pem, round_trip=False) as tls:
            assert tls.get_tls_protocol() == "TLSv1.3"
            assert group_of(tls) == "x25519"
            assert tls.get_ephemeral_key_info() == {"type": "ECDH", "name": "X25519", "size": 253}


# -- dhparam and min_dh_size ---------------------------------------------------------

DHE_CLIENT = {"ciphers": "DHE-RSA-AES128-GCM-SHA256", **TLS12}
#: Client groups without RFC 7919 ffdhe groups: with those offered (aiotls's default list has
#: ffdhe2048), OpenSSL 4 negotiates ffdhe2048 and the server's own dhparam is not used.
NO_FFDHE = {"ecdh_curve": "X25519:P-256"}


async def test_dhparam_enables_dhe(rsa: Pki, dh2048: str) -> None:
    async with (
        serving(**rsa.identity(), dhparam=dh2048) as served,
        connected(served.port, ca=rsa.ca_pem, **DHE_CLIENT, **NO_FFDHE) as tls,
    ):
        assert tls.get_cipher()["name"] == "DHE-RSA-AES128-GCM-SHA256"
        assert tls.get_ephemeral_key_info() == {"type": "DH", "size": 2048}


async def test_without_dhparam_node_gets_no_dhe(rsa: Pki, rsa_files: dict[str, str]) -> None:
    async with serving(**rsa.identity()) as served:
        (report,) = await node_client(
            {"port": served.port, "servername": "localhost", "ca": rsa_files["ca"],
             "maxVersion": "TLSv1.2", "ciphers": "DHE-RSA-AES128-GCM-SHA256"}
        )  # fmt: skip
        assert report["error"] == "ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE"
        # An aiotls client that offers no RFC 7919 group gets none either.
        exc = await refused(served.port, ca=rsa.ca_pem, **DHE_CLIENT, **NO_FFDHE)
        assert "HANDSHAKE_FAILURE" in error_code(exc), exc
        # The same server still speaks ECDHE.
        async with connected(served.port, ca=rsa.ca_pem, **TLS12) as tls:
            assert tls.get_cipher()["name"].startswith("ECDHE-RSA-")


async def test_without_dhparam_there_is_no_dhe(rsa: Pki) -> None:
    async with serving(**rsa.identity()) as served:
        exc = await refused(served.port, ca=rsa.ca_pem, **DHE_CLIENT)
        assert "HANDSHAKE_FAILURE" in error_code(exc), exc


def test_dhparam_under_1024_bits_fails(dh512: str) -> None:
    with pytest.raises(
        aiotls.TLSConfigError, match=r"^dhparam: .*512 bits.*less than 1024"
    ) as info:
        aiotls.create_secure_context(dhparam=dh512)
    assert info.value.code == "ERR_TLS_DH_PARAM_SIZE"


def test_bad_dhparam_fails() -> None:
    with pytest.raises(aiotls.TLSConfigError, match=r"^dhparam: "):
        aiotls.create_secure_context(dhparam="-----BEGIN DH PARAMETERS-----\nAAAA\n")
    with pytest.raises(TypeError, match="dhparam"):
        aiotls.create_secure_context(dhparam=2048)


#: OpenSSL 4 runs at security level 2, which refuses DH primes under 2048 bits on both ends;
#: "@SECLEVEL=1" in ``ciphers`` (as in node) lets the 1024-bit cases below happen at all.
SECLEVEL1 = "DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:@SECLEVEL=1"


def dhparam_1024_context(rsa: Pki, dh1024: str) -> aiotls.SecureContext:
    """A server context with a 1024-bit prime: accepted with a warning (as in node)."""
    with pytest.warns(UserWarning, match=r"^dhparam: 1024-bit .*2048"):
        return aiotls.create_secure_context(**rsa.identity(), dhparam=dh1024, ciphers=SECLEVEL1)


def test_dhparam_refused_by_openssl_says_why(dh1024: str) -> None:
    with (
        pytest.warns(UserWarning, match="2048"),
        pytest.raises(aiotls.TLSConfigError, match=r"^dhparam: .*dh key too small"),
    ):
        aiotls.create_secure_context(dhparam=dh1024)


async def test_min_dh_size(rsa: Pki, dh1024: str, dh2048: str) -> None:
    async with serving(context=dhparam_1024_context(rsa, dh1024)) as served:
        client = {**DHE_CLIENT, **NO_FFDHE, "ciphers": SECLEVEL1}
        # The default min_dh_size (1024) takes it.
        async with connected(served.port, ca=rsa.ca_pem, **client) as tls:
            assert tls.get_ephemeral_key_info() == {"type": "DH", "size": 1024}
        exc = await refused(served.port, ca=rsa.ca_pem, min_dh_size=2048, **client)
        assert isinstance(exc, aiotls.TLSError)
        assert exc.code == "ERR_TLS_DH_PARAM_SIZE"
        assert "1024" in str(exc) and "2048" in str(exc)
    # The same check at the default security level: a 2048-bit prime, 3072 required.
    async with serving(**rsa.identity(), dhparam=dh2048) as served:
        exc = await refused(served.port, ca=rsa.ca_pem, min_dh_size=3072, **DHE_CLIENT, **NO_FFDHE)
        assert error_code(exc) == "ERR_TLS_DH_PARAM_SIZE"


async def test_node_min_dh_size_agrees(rsa: Pki, rsa_files: dict[str, str], dh1024: str) -> None:
    async with serving(context=dhparam_1024_context(rsa, dh1024)) as served:
        client = {
            "port": served.port, "servername": "localhost", "ca": rsa_files["ca"],
            "maxVersion": "TLSv1.2", "ciphers": "DHE-RSA-AES128-GCM-SHA256",
        }  # fmt: skip
        ok, small = await node_client(client), await node_client({**client, "minDHSize": 2048})
    assert ok[0]["ephemeralKeyInfo"] == {"type": "DH", "size": 1024}
    assert small[0]["error"] == "ERR_TLS_DH_PARAM_SIZE"


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1, ValueError), ("2048", TypeError)]
)
async def test_bad_min_dh_size(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="min_dh_size"):
        await aiotls.open_connection(HOST, 9, min_dh_size=value)


# -- versions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "client", "expected"),
    [
        ({}, {}, "TLSv1.3"),
        ({"max_version": "TLSv1.2"}, {}, "TLSv1.2"),
        ({}, {"max_version": "TLSv1.2"}, "TLSv1.2"),
        (
            {"min_version": "TLSv1.2", "max_version": "TLSv1.3"},
            {"min_version": "TLSv1.3"},
            "TLSv1.3",
        ),
        ({"min_version": "TLSv1.3"}, {"max_version": "TLSv1.2"}, None),
        ({"max_version": "TLSv1.2"}, {"min_version": "TLSv1.3"}, None),
        ({"secure_protocol": "TLSv1_2_method"}, {}, "TLSv1.2"),
        ({"secure_protocol": "TLS_method"}, {}, "TLSv1.3"),
        ({}, {"secure_protocol": "TLSv1_2_client_method"}, "TLSv1.2"),
        ({"secure_protocol": "TLSv1_2_server_method"}, {"min_version": "TLSv1.3"}, None),
    ],
)
async def test_versions(
    server: dict[str, str], client: dict[str, str], expected: str | None, ec: Pki
) -> None:
    async with serving(**ec.identity(), **server) as served:
        if expected is None:
            exc = await refused(served.port, ca=ec.ca_pem, **client)
            assert "PROTOCOL_VERSION" in error_code(exc), exc
            return
        async with connected(served.port, ca=ec.ca_pem, **client) as tls:
            assert tls.get_tls_protocol() == expected
            assert tls.get_extra_info("tls").get_protocol() == expected
            assert served.accepted[0].get_tls_protocol() == expected


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"secure_protocol": "TLSv1_2_method", "min_version": "TLSv1.2"},
         "ERR_TLS_PROTOCOL_VERSION_CONFLICT"),
        ({"secure_protocol": "TLSv1_2_method", "max_version": "TLSv1.3"},
         "ERR_TLS_PROTOCOL_VERSION_CONFLICT"),
        ({"secure_protocol": "SSLv3_method"}, "ERR_TLS_INVALID_PROTOCOL_METHOD"),
        ({"min_version": "TLSv1.4"}, "ERR_TLS_INVALID_PROTOCOL_VERSION"),
        ({"max_version": "SSLv3"}, "ERR_TLS_INVALID_PROTOCOL_VERSION"),
    ],
)  # fmt: skip
def test_bad_versions_fail_with_node_codes(options: dict[str, str], code: str) -> None:
    with pytest.raises(aiotls.TLSConfigError) as info:
        aiotls.create_secure_context(**options)
    assert info.value.code == code
    assert str(info.value).startswith(tuple(options))  # names the option


def test_max_version_below_min_version_fails() -> None:
    with pytest.raises(aiotls.TLSConfigError, match="max_version"):
        aiotls.create_secure_context(min_version="TLSv1.3", max_version="TLSv1.2")
    with pytest.raises(TypeError, match="min_version"):
        aiotls.create_secure_context(min_version=1.2)


# -- secure_options, session_id_context, session_timeout -----------------------------


async def test_secure_options_no_ticket(ec: Pki) -> None:
    async with (
        serving(**ec.identity()) as served,
        connected(served.port, ca=ec.ca_pem, **TLS12) as tls,
    ):
        assert tls.get_tls_ticket()  # a default server hands out a ticket
    async with serving(**ec.identity(), secure_options=OP_NO_TICKET) as served:
        async with connected(served.port, ca=ec.ca_pem, **TLS12) as tls:
            assert tls.get_tls_ticket() is None
            session = tls.get_session()
        # Without tickets the server's session-ID cache still resumes the session.
        reused, _ = await session_of(served.port, ca=ec.ca_pem, session=session, **TLS12)
        assert reused
    with pytest.raises(TypeError, match="secure_options"):
        aiotls.create_secure_context(secure_options="OP_NO_TICKET")


TICKET_KEYS = bytes(range(80))


@pytest.mark.parametrize("version", list(VERSIONS))
async def test_session_id_context(version: str, ec: Pki) -> None:
    """Servers sharing ticket keys resume each other's sessions only within one context."""
    ctx_a = aiotls.create_secure_context(
        **ec.identity(), ticket_keys=TICKET_KEYS, session_id_context="app-1"
    )
    same = aiotls.create_secure_context(
        **ec.identity(), ticket_keys=TICKET_KEYS, session_id_context="app-1"
    )
    other = aiotls.create_secure_context(
        **ec.identity(), ticket_keys=TICKET_KEYS, session_id_context="app-2"
    )
    client = {"ca": ec.ca_pem, **VERSIONS[version]}
    async with serving(context=ctx_a) as a, serving(context=same) as b, serving(context=other) as c:
        _, session = await session_of(a.port, **client)
        assert session
        assert (await session_of(b.port, session=session, **client))[0]
        assert not (await session_of(c.port, session=session, **client))[0]
    with pytest.raises(TypeError, match="session_id_context"):
        aiotls.create_secure_context(session_id_context=12)


@pytest.mark.parametrize("version", list(VERSIONS))
async def test_session_timeout(version: str, ec: Pki) -> None:
    """A session outlives session_timeout=1 by a second: a full handshake; one of a server
    with the default timeout, as old, resumes (the control, free of the machine's speed)."""
    client = {"ca": ec.ca_pem, **VERSIONS[version]}
    async with serving(**ec.identity(), session_timeout=1) as short, serving(
        **ec.identity()
    ) as default:
        _, expiring = await session_of(short.port, **client)
        _, lasting = await session_of(default.port, **client)
        await asyncio.sleep(2.2)  # the expiry itself is the subject; OpenSSL counts seconds
        reused, _ = await session_of(short.port, session=expiring, **client)
        assert not reused  # expired: a full handshake
        reused, _ = await session_of(default.port, session=lasting, **client)
        assert reused


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-5, ValueError), ("1", TypeError)])
def test_bad_session_timeout(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="session_timeout"):
        aiotls.create_secure_context(session_timeout=value)


# -- npn_protocols (TLS 1.2 only) ----------------------------------------------------


async def test_npn_aiotls_server_with_s_client(ec: Pki, ec_files: dict[str, str]) -> None:
    openssl = require("openssl")
    async with serving(**ec.identity(), npn_protocols=["spdy/2", "http/1.1"]) as served, run_peer(
        openssl, "s_client", "-connect", f"{HOST}:{served.port}", "-tls1_2",
        "-servername", "localhost", "-CAfile", ec_files["ca"], "-verify_return_error",
        "-nextprotoneg", "http/1.1,spdy/2",
    ) as client:  # fmt: skip
        (proto,) = await client.wait_for_output(r"^Next protocol: \(1\) (\S+)$")
        # OpenSSL's selection: the first of the server's protocols the client also has.
        assert proto == "spdy/2"
        (accepted,) = served.accepted
        assert accepted.npn_protocol == "spdy/2"
        assert accepted.alpn_protocol is False
        await client.feed(b"")
        assert await client.wait(STEP) == 0, str(client)


async def test_npn_aiotls_client_with_s_server(ec: Pki, ec_files: dict[str, str]) -> None:
    openssl = require("openssl")
    async with run_peer(
        openssl, "s_server", "-accept", f"{HOST}:0", "-naccept", "1", "-tls1_2",
        "-key", ec_files["key"], "-cert", ec_files["cert"], "-nextprotoneg", "spdy/2,http/1.1",
    ) as server:  # fmt: skip
        (port,) = await server.wait_for_output(r"^ACCEPT .*:(\d+)$")
        async with connected(
            int(port), ca=ec.ca_pem, npn_protocols=["http/1.1", "spdy/2"], round_trip=False
        ) as tls:
            assert tls.npn_protocol == "spdy/2"
            assert tls.alpn_protocol is False
            (proto,) = await server.wait_for_output(r"^NEXTPROTO is (\S+)$")
            assert proto == "spdy/2"


async def test_alpn_wins_over_npn_with_s_client(ec: Pki, ec_files: dict[str, str]) -> None:
    openssl = require("openssl")
    server = {"npn_protocols": ["spdy/2"], "alpn_protocols": ["h2"]}
    async with serving(**ec.identity(), **server) as served, run_peer(
        openssl, "s_client", "-connect", f"{HOST}:{served.port}", "-tls1_2",
        "-servername", "localhost", "-CAfile", ec_files["ca"], "-verify_return_error",
        "-nextprotoneg", "spdy/2", "-alpn", "h2",
    ) as client:  # fmt: skip
        (proto,) = await client.wait_for_output(r"^ALPN protocol: (\S+)$")
        assert proto == "h2"
        (accepted,) = served.accepted
        assert accepted.alpn_protocol == "h2"
        assert accepted.npn_protocol is False
        await client.feed(b"")
        assert await client.wait(STEP) == 0, str(client)
        assert b"Next protocol" not in client.stdout


@pytest.mark.parametrize(
    ("version", "alpn", "npn_expected"),
    [("TLSv1.2", False, "http/1.1"), ("TLSv1.2", True, False), ("TLSv1.3", False, False)],
)
async def test_npn_between_aiotls_ends(
    version: str, alpn: bool, npn_expected: str | bool, ec: Pki
) -> None:
    both: dict[str, Any] = {"npn_protocols": ["http/1.1"]}
    if alpn:
        both["alpn_protocols"] = ["h2"]
    async with (
        serving(**ec.identity(), **both) as served,
        connected(served.port, ca=ec.ca_pem, **both, **VERSIONS[version]) as tls,
    ):
        (accepted,) = served.accepted
        assert tls.npn_protocol == accepted.npn_protocol == npn_expected
        assert tls.alpn_protocol == accepted.alpn_protocol == ("h2" if alpn else False)


@pytest.mark.parametrize(
    ("value", "error"),
    [("http/1.1", TypeError), ([1], TypeError), ([""], ValueError), ([], ValueError)],
)
def test_bad_npn_protocols(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="npn_protocols"):
        aiotls.create_secure_context(npn_protocols=value)


# -- ticket_keys ---------------------------------------------------------------------


@pytest.mark.parametrize("version", list(VERSIONS))
async def test_ticket_keys_shared_between_servers(version: str, ec: Pki) -> None:
    client = {"ca": ec.ca_pem, **VERSIONS[version]}
    other_keys = bytes(reversed(TICKET_KEYS))
    async with (
        serving(**ec.identity(), ticket_keys=TICKET_KEYS) as a,
        serving(**ec.identity(), ticket_keys=bytearray(TICKET_KEYS)) as b,
        serving(**ec.identity(), ticket_keys=other_keys) as c,
    ):
        reused, session = await session_of(a.port, **client)
        assert not reused and session
        async with connected(a.port, **client) as tls:
            assert tls.get_tls_ticket()  # the session carries a ticket
        # Server B decrypts A's ticket: resumed. C has other keys: a full handshake.
        assert (await session_of(b.port, session=session, **client))[0]
        assert not (await session_of(c.port, session=session, **client))[0]
        # And back: B's session resumes on A.
        _, session_b = await session_of(b.port, **client)
        assert (await session_of(a.port, session=session_b, **client))[0]


@pytest.mark.parametrize(
    ("value", "error"),
    [(bytes(48), aiotls.TLSConfigError), (bytes(79), aiotls.TLSConfigError),
     (bytes(81), aiotls.TLSConfigError), (b"", aiotls.TLSConfigError),
     ("x" * 80, TypeError), (80, TypeError)],
)  # fmt: skip
def test_ticket_keys_of_other_lengths_fail(value: object, error: type[Exception]) -> None:
    # (Node's own ticketKeys are 48 bytes; aiotls takes OpenSSL's 80-byte layout.)
    with pytest.raises(error, match=r"^ticket_keys: .*80 bytes"):
        aiotls.create_secure_context(ticket_keys=value)


def test_dhparam_2048_warns_nothing(dh2048: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aiotls.create_secure_context(dhparam=dh2048)
