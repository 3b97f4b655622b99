"""Node's test-tls-server-verify matrix: client identities x request_cert x reject_unauthorized,
with a CRL revoking one of the CA's client certificates."""

from __future__ import annotations

import asyncio
import datetime

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from peers import HOST
from util import echo, tls_server

import aiotls

NOW = datetime.datetime.now(datetime.UTC)


def _self_signed() -> dict[str, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-signed client")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return {
        "key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "cert": cert.public_bytes(serialization.Encoding.PEM),
    }


def _identity(leaf: trustme.LeafCert) -> dict[str, bytes]:
    """A client certificate the CA issued, as key/cert options."""
    return {"key": leaf.private_key_pem.bytes(), "cert": leaf.cert_chain_pems[0].bytes()}


@pytest.fixture(scope="module")
def identities(ca: trustme.CA) -> dict[str, dict[str, bytes]]:
    return {
        "none": {},
        "self-signed": _self_signed(),
        "ca-signed": _identity(ca.issue_cert("good-client@example.test")),  # CA-signed, not revoked
        "revoked": _identity(ca.issue_cert("revoked-client@example.test")),
    }


# (request_cert, reject_unauthorized) -> identity -> expected (connects, authorized, error)
MATRIX = {
    (False, False): {
        "none": (True, False, None),
        "self-signed": (True, False, None),
        "ca-signed": (True, False, None),
        "revoked": (True, False, None),
    },
    (True, False): {
        "none": (True, False, "UNABLE_TO_GET_ISSUER_CERT"),
        "self-signed": (True, False, "DEPTH_ZERO_SELF_SIGNED_CERT"),
        "ca-signed": (True, True, None),
        "revoked": (True, False, "CERT_REVOKED"),
    },
    (True, True): {
        "none": (False, False, None),
        "self-signed": (False, False, None),
        "ca-signed": (True, True, None),
        "revoked": (False, False, None),
    },
}


@pytest.mark.parametrize(("request_cert", "reject"), list(MATRIX))
async def test_server_verify_matrix(
    ca: trustme.CA,
    server_key_pem: str,
    server_chain_pem: str,
    ca_pem: str,
    identities: dict[str, dict[str, bytes]],
    request_cert: bool,
    reject: bool,
) -> None:
    ctx = aiotls.create_secure_context(
        key=server_key_pem,
        cert=server_chain_pem,
        ca=ca_pem,
        crl=_crl_for(ca, identities["revoked"]["cert"]),
        request_cert=request_cert,
        reject_unauthorized=reject,
    )
    seen: dict[str, tuple[bool, str | None]] = {}
    current: list[str] = []

    def record(transport: aiotls.TLSTransport) -> None:
        seen[current[0]] = (transport.authorized, transport.authorization_error)

    async with tls_server(echo, ctx, on_secure_connection=record) as (_, port):
        for name, (connects, authorized, error) in MATRIX[(request_cert, reject)].items():
            current[:] = [name]
            try:
                reader, writer = await aiotls.open_connection(
                    HOST, port, ca=ca_pem, servername="localhost", **identities[name]
                )
                writer.write(b"ping")
                got = await asyncio.wait_for(reader.read(4), 5)
                writer.close()
            except (aiotls.TLSError, ConnectionError):
                got = b""
            assert (got == b"ping") is connects, name
            if connects:
                assert seen[name] == (authorized, error), name


def _crl_for(ca: trustme.CA, revoked_cert_pem: bytes) -> bytes:
    """A current CRL, signed by the CA, revoking one certificate."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    serial = x509.load_pem_x509_certificate(revoked_cert_pem).serial_number
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(serial)
        .revocation_date(NOW - datetime.timedelta(minutes=5))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(NOW - datetime.timedelta(minutes=5))
        .next_update(NOW + datetime.timedelta(days=1))
        .add_revoked_certificate(entry)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return crl.public_bytes(serialization.Encoding.PEM)
