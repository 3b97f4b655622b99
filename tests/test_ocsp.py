"""aiotls.ocsp: request building, HTTP fetch, and response verification.

Against a real ``openssl ocsp`` responder (subprocess, killed by PID) for the
end-to-end paths, against a tiny asyncio HTTP server for the HTTP edge cases,
and with responses built by cryptography's OCSPResponseBuilder for every
verification rule (issuer-signed, delegated, forged, stale, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocsp_util import (
    PKI,
    OCSPResponder,
    build_response,
    index_line,
    issue_cert,
    make_ca_cert,
    make_pki,
)
from peers import held_port

from aiotls import ocsp as aocsp
from aiotls.ocsp import OCSPError, OCSPStatus, OCSPTimeoutError

pytestmark = pytest.mark.timeout(30)

UTC = datetime.UTC
GOOD = ocsp.OCSPCertStatus.GOOD
REVOKED = ocsp.OCSPCertStatus.REVOKED
UNKNOWN = ocsp.OCSPCertStatus.UNKNOWN


def now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return make_pki(tmp_path)


@pytest.fixture
def responder(pki: PKI) -> Iterator[OCSPResponder]:
    """openssl ocsp for ``pki`` on the port its leaves' AIA names; at most 8 requests."""
    with OCSPResponder.for_pki(pki, nrequest=8) as r:
        yield r


def tamper_signature(der: bytes) -> bytes:
    """The response with the last byte of its signature flipped."""
    signature = ocsp.load_der_ocsp_response(der).signature
    assert der.count(signature) == 1
    bad = signature[:-1] + bytes([signature[-1] ^ 0x01])
    return der.replace(signature, bad)


# =========================================================================== request / AIA


def test_build_request_default_sha1(pki: PKI) -> None:
    der = aocsp.build_request(pki.good.cert, pki.ca.cert)
    request = ocsp.load_der_ocsp_request(der)
    assert request.serial_number == pki.good.cert.serial_number
    assert isinstance(request.hash_algorithm, hashes.SHA1)
    key_id = x509.SubjectKeyIdentifier.from_public_key(pki.ca.cert.public_key()).digest
    assert request.issuer_key_hash == key_id  # SHA-1 of the issuer's public key bits
    digest = hashes.Hash(hashes.SHA1())
    digest.update(pki.ca.cert.subject.public_bytes())
    assert request.issuer_name_hash == digest.finalize()


def test_build_request_sha256_and_bad_hash(pki: PKI) -> None:
    der = aocsp.build_request(pki.good.cert, pki.ca.cert, hash_algorithm=hashes.SHA256())
    request = ocsp.load_der_ocsp_request(der)
    assert isinstance(request.hash_algorithm, hashes.SHA256)
    assert len(request.issuer_key_hash) == 32
    with pytest.raises(ValueError, match="hash_algorithm"):
        aocsp.build_request(pki.good.cert, pki.ca.cert, hash_algorithm=hashes.MD5())


def test_responder_urls(pki: PKI) -> None:
    assert aocsp.responder_urls(pki.good.cert) == [pki.ocsp_url]
    assert aocsp.responder_urls(pki.ca.cert) == []  # no AIA at all
    cert, _ = issue_cert(pki.ca.cert, pki.ca.key, "multi")
    aia = x509.AuthorityInformationAccess(
        [
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier("http://ca.example/ca.der"),
            ),
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier("http://a/")
            ),
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier("http://b/")
            ),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .add_extension(aia, critical=False)
    )
    multi = builder.sign(pki.ca.key, hashes.SHA256())
    assert aocsp.responder_urls(multi) == ["http://a/", "http://b/"]


# =========================================================================== real openssl ocsp


async def test_openssl_good_and_revoked(pki: PKI, responder: OCSPResponder) -> None:
    # No url=: fetch follows the leaves' AIA OCSP URL (127.0.0.1:<responder port>).
    assert aocsp.responder_urls(pki.good.cert) == [responder.url]
    der = await aocsp.fetch(pki.good.cert, pki.ca.cert, timeout=5)
    status = aocsp.verify(der, pki.good.cert, pki.ca.cert)
    assert status.status == "good"
    assert status.revocation_time is None and status.revocation_reason is None
    assert status.next_update is not None  # for_pki passes -ndays 1
    assert abs(status.next_update - status.this_update - datetime.timedelta(days=1)) < (
        datetime.timedelta(seconds=5)
    )
    assert abs(status.this_update - now()) < datetime.timedelta(minutes=1)
    # openssl signs with the delegated responder and includes its certificate.
    response = ocsp.load_der_ocsp_response(der)
    assert response.certificates == [pki.responder.cert]

    der = await aocsp.fetch(pki.revoked.cert, pki.ca.cert, timeout=5)
    status = aocsp.verify(der, pki.revoked.cert, pki.ca.cert)
    assert status.status == "revoked"
    assert status.revocation_time == pki.revocation_time
    assert status.revocation_reason is x509.ReasonFlags.key_compromise
    assert "POST / HTTP/1.1" in responder.log()


async def test_openssl_unknown_serial(pki: PKI, responder: OCSPResponder) -> None:
    stranger = pki.issue("stranger", "not-in-index", ocsp_url=pki.ocsp_url)
    der = await aocsp.fetch(stranger.cert, pki.ca.cert, timeout=5)
    assert aocsp.verify(der, stranger.cert, pki.ca.cert).status == "unknown"


async def test_openssl_response_for_wrong_cert(pki: PKI, responder: OCSPResponder) -> None:
    der = await aocsp.fetch(pki.good.cert, pki.ca.cert, url=responder.url, timeout=5)
    with pytest.raises(OCSPError, match="not for this certificate"):
        aocsp.verify(der, pki.revoked.cert, pki.ca.cert)
    other_ca, _ = make_ca_cert("another CA")
    with pytest.raises(OCSPError, match="did not issue"):
        aocsp.verify(der, pki.good.cert, other_ca)


async def test_openssl_badsig(pki: PKI) -> None:
    with OCSPResponder.for_pki(pki, nrequest=2, extra_args=["-badsig"]) as r:
        der = await aocsp.fetch(pki.good.cert, pki.ca.cert, url=r.url, timeout=5)
    with pytest.raises(OCSPError, match="signature is invalid"):
        aocsp.verify(der, pki.good.cert, pki.ca.cert)


async def test_openssl_nmin_goes_stale(pki: PKI) -> None:
    with OCSPResponder.for_pki(pki, ndays=None, nmin=1, nrequest=2) as r:
        der = await aocsp.fetch(pki.good.cert, pki.ca.cert, url=r.url, timeout=5)
    status = aocsp.verify(der, pki.good.cert, pki.ca.cert)
    assert status.next_update is not None
    assert status.next_update - status.this_update == datetime.timedelta(minutes=1)
    with pytest.raises(OCSPError, match="stale"):
        aocsp.verify(der, pki.good.cert, pki.ca.cert, now=now() + datetime.timedelta(minutes=3))


async def test_openssl_without_next_update_needs_max_age(pki: PKI) -> None:
    # Quirk: without -ndays/-nmin openssl ocsp leaves nextUpdate out entirely.
    with OCSPResponder.for_pki(pki, ndays=None, nrequest=2) as r:
        der = await aocsp.fetch(pki.good.cert, pki.ca.cert, url=r.url, timeout=5)
    status = aocsp.verify(der, pki.good.cert, pki.ca.cert)
    assert status.status == "good" and status.next_update is None
    later = now() + datetime.timedelta(hours=2)
    assert aocsp.verify(der, pki.good.cert, pki.ca.cert, now=later).status == "good"
    with pytest.raises(OCSPError, match="too old"):
        aocsp.verify(
            der, pki.good.cert, pki.ca.cert, now=later, max_age=datetime.timedelta(hours=1)
        )


@pytest.mark.parametrize("which", ["no_eku", "other_ca", "not_included"])
async def test_openssl_unauthorized_signer(pki: PKI, which: str) -> None:
    extra: list[str] = []
    if which == "no_eku":  # issued by the CA but only for serverAuth
        signer = pki.issue("signer", "no-eku responder", key_type="ec")
    elif which == "other_ca":  # OCSPSigning EKU, but from a CA that is not the issuer
        rogue_cert, rogue_key = make_ca_cert("rogue CA")
        cert, key = issue_cert(
            rogue_cert, rogue_key, "rogue responder", eku=[ExtendedKeyUsageOID.OCSP_SIGNING]
        )
        signer = pki.issue("signer", "placeholder")
        signer.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        signer.key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    else:  # the proper delegated responder, but its certificate is left out
        signer = pki.responder
        extra = ["-resp_no_certs"]
    with OCSPResponder(
        index=pki.index_path,
        ca=pki.ca.cert_path,
        rsigner=signer.cert_path,
        rkey=signer.key_path,
        ndays=1,
        nrequest=2,
        extra_args=extra,
    ) as r:
        der = await aocsp.fetch(pki.good.cert, pki.ca.cert, url=r.url, timeout=5)
    message = {
        "no_eku": "lacks the OCSPSigning",
        "other_ca": "not issued by the certificate's issuer",
        "not_included": "signed neither by the certificate's issuer nor",
    }[which]
    with pytest.raises(OCSPError, match=message):
        aocsp.verify(der, pki.good.cert, pki.ca.cert)


async def test_openssl_signed_by_issuer(pki: PKI) -> None:
    with OCSPResponder(
        index=pki.index_path,
        ca=pki.ca.cert_path,
        rsigner=pki.ca.cert_path,
        rkey=pki.ca.key_path,
        ndays=1,
        nrequest=2,
    ) as r:
        der = await aocsp.fetch(pki.revoked.cert, pki.ca.cert, url=r.url, timeout=5)
    status = aocsp.verify(der, pki.revoked.cert, pki.ca.cert)
    assert status.status == "revoked" and status.revocation_time == pki.revocation_time


@pytest.mark.parametrize("digest", ["sha256", "sha384"])
async def test_openssl_rsa_pss_signature(pki: PKI, digest: str) -> None:
    # The delegated responder key is RSA; -rsigopt makes openssl sign with RSA-PSS
    # (salt length = max); the hash is only in the PSS parameters.
    args = ["-rsigopt", "rsa_padding_mode:pss", "-rmd", digest]
    with OCSPResponder.for_pki(pki, nrequest=2, extra_args=args) as r:
        der = await aocsp.fetch(pki.good.cert, pki.ca.cert, url=r.url, timeout=5)
    response = ocsp.load_der_ocsp_response(der)
    assert response.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSASSA_PSS
    assert aocsp.verify(der, pki.good.cert, pki.ca.cert).status == "good"
    with pytest.raises(OCSPError, match="signature is invalid"):
        aocsp.verify(tamper_signature(der), pki.good.cert, pki.ca.cert)


async def test_openssl_rcid_quirk(pki: PKI) -> None:
    # Quirk of OpenSSL 3.0's responder: with -rcid <digest> the CertID it returns
    # has serial number 0, so the response is not for the certificate asked about.
    with OCSPResponder.for_pki(pki, nrequest=2, extra_args=["-rcid", "sha256"]) as r:
        der = await aocsp.fetch(pki.good.cert, pki.ca.cert, url=r.url, timeout=5)
    (single,) = ocsp.load_der_ocsp_response(der).responses
    assert isinstance(single.hash_algorithm, hashes.SHA256)
    if single.serial_number == pki.good.cert.serial_number:  # fixed in a later OpenSSL
        assert aocsp.verify(der, pki.good.cert, pki.ca.cert).status == "good"
    else:
        with pytest.raises(OCSPError, match="not for this certificate"):
            aocsp.verify(der, pki.good.cert, pki.ca.cert)


async def test_responder_helper_lifecycle(pki: PKI) -> None:
    r = OCSPResponder.for_pki(pki, port=0, nrequest=1)  # openssl picks the port
    try:
        assert r.port not in (0, pki.ocsp_port) and r.url == f"http://127.0.0.1:{r.port}/"
        assert r.proc is not None and r.proc.poll() is None
        proc = r.proc
        der = await aocsp.fetch(pki.good.cert, pki.ca.cert, url=r.url, timeout=5)
        assert aocsp.verify(der, pki.good.cert, pki.ca.cert).status == "good"
        # -nrequest 1: openssl exits by itself after one request
        assert await asyncio.to_thread(proc.wait, 5) == 0
    finally:
        r.close()
    r.close()  # idempotent
    assert r.proc is None


def test_index_line_format(pki: PKI) -> None:
    line = index_line(pki.good.cert)
    fields = line.rstrip("\n").split("\t")
    assert fields[0] == "V" and fields[2] == "" and fields[4] == "unknown"
    assert int(fields[3], 16) == pki.good.cert.serial_number and len(fields[3]) % 2 == 0
    assert fields[3] == fields[3].upper()
    revoked = index_line(pki.revoked.cert, revoked_at=pki.revocation_time)
    assert revoked.split("\t")[2] == pki.revocation_time.strftime("%y%m%d%H%M%SZ")


# =========================================================================== verify (built here)


@pytest.mark.parametrize("key_type", ["ec", "rsa", "ed25519"])
@pytest.mark.parametrize(
    "responder_id", [ocsp.OCSPResponderEncoding.HASH, ocsp.OCSPResponderEncoding.NAME]
)
def test_signed_by_issuer(
    tmp_path: Path, key_type: str, responder_id: ocsp.OCSPResponderEncoding
) -> None:
    ca_cert, ca_key = make_ca_cert(key_type=key_type)
    leaf, _ = issue_cert(ca_cert, ca_key, "leaf")
    der = build_response(leaf, ca_cert, ca_cert, ca_key, responder_id=responder_id)
    status = aocsp.verify(der, leaf, ca_cert)
    assert status == OCSPStatus(
        status="good",
        this_update=status.this_update,
        next_update=status.this_update + datetime.timedelta(days=1),
        revocation_time=None,
        revocation_reason=None,
        produced_at=status.produced_at,
    )
    with pytest.raises(OCSPError, match="signature is invalid"):
        aocsp.verify(tamper_signature(der), leaf, ca_cert)


def test_issuer_statuses(pki: PKI) -> None:
    ca, key = pki.ca.cert, pki.ca.key
    revoked_at = (now() - datetime.timedelta(days=1)).replace(microsecond=0)
    der = build_response(
        pki.revoked.cert,
        ca,
        ca,
        key,
        status=REVOKED,
        revocation_time=revoked_at,
        revocation_reason=x509.ReasonFlags.superseded,
    )
    status = aocsp.verify(der, pki.revoked.cert, ca)
    assert (status.status, status.revocation_time, status.revocation_reason) == (
        "revoked",
        revoked_at,
        x509.ReasonFlags.superseded,
    )
    der = build_response(pki.revoked.cert, ca, ca, key, status=REVOKED, revocation_time=revoked_at)
    assert aocsp.verify(der, pki.revoked.cert, ca).revocation_reason is None
    der = build_response(pki.good.cert, ca, ca, key, status=UNKNOWN)
    assert aocsp.verify(der, pki.good.cert, ca).status == "unknown"


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()])
def test_cert_id_hash_algorithms(pki: PKI, algorithm: hashes.HashAlgorithm) -> None:
    der = build_response(
        pki.good.cert, pki.ca.cert, pki.ca.cert, pki.ca.key, cert_id_hash=algorithm
    )
    assert ocsp.load_der_ocsp_response(der).hash_algorithm.name == algorithm.name
    assert aocsp.verify(der, pki.good.cert, pki.ca.cert).status == "good"
    with pytest.raises(OCSPError, match="not for this certificate"):
        aocsp.verify(der, pki.revoked.cert, pki.ca.cert)


def test_status_is_frozen(pki: PKI) -> None:
    der = build_response(pki.good.cert, pki.ca.cert, pki.ca.cert, pki.ca.key)
    status = aocsp.verify(der, pki.good.cert, pki.ca.cert)
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.status = "revoked"  # type: ignore[misc]
    assert status.this_update.tzinfo is not None and status.produced_at.tzinfo is not None


def test_delegated_responder_built_here(pki: PKI) -> None:
    der = build_response(pki.good.cert, pki.ca.cert, pki.responder.cert, pki.responder.key)
    assert aocsp.verify(der, pki.good.cert, pki.ca.cert).status == "good"
    # the same response, but the delegate is not in it
    der = build_response(
        pki.good.cert, pki.ca.cert, pki.responder.cert, pki.responder.key, include_certs=[]
    )
    with pytest.raises(OCSPError, match="signed neither"):
        aocsp.verify(der, pki.good.cert, pki.ca.cert)


def test_delegate_with_other_certs_included(pki: PKI) -> None:
    # Extra unrelated certificates in the response do not confuse signer selection.
    der = build_response(
        pki.good.cert,
        pki.ca.cert,
        pki.responder.cert,
        pki.responder.key,
        include_certs=[pki.good.cert, pki.responder.cert],
        responder_id=ocsp.OCSPResponderEncoding.NAME,
    )
    assert aocsp.verify(der, pki.good.cert, pki.ca.cert).status == "good"


def test_expired_delegate_rejected(pki: PKI) -> None:
    old = now() - datetime.timedelta(days=3)
    cert, key = issue_cert(
        pki.ca.cert,
        pki.ca.key,
        "expired responder",
        eku=[ExtendedKeyUsageOID.OCSP_SIGNING],
        not_valid_before=old,
        not_valid_after=old + datetime.timedelta(days=1),
    )
    der = build_response(pki.good.cert, pki.ca.cert, cert, key)
    with pytest.raises(OCSPError, match="not valid now"):
        aocsp.verify(der, pki.good.cert, pki.ca.cert)


def test_delegate_without_eku_rejected(pki: PKI) -> None:
    cert, key = issue_cert(pki.ca.cert, pki.ca.key, "plain", eku=None)
    der = build_response(pki.good.cert, pki.ca.cert, cert, key)
    with pytest.raises(OCSPError, match="lacks the OCSPSigning"):
        aocsp.verify(der, pki.good.cert, pki.ca.cert)


def test_forged_issuer_name_rejected(pki: PKI) -> None:
    # A key that is not the CA's signs a response whose responderID names the CA.
    impostor_cert, impostor_key = make_ca_cert(pki.ca.cert.subject.rfc4514_string()[3:])
    assert impostor_cert.subject == pki.ca.cert.subject
    der = build_response(
        pki.good.cert,
        pki.ca.cert,
        impostor_cert,
        impostor_key,
        include_certs=[impostor_cert],
        responder_id=ocsp.OCSPResponderEncoding.NAME,
    )
    with pytest.raises(OCSPError, match="signature is invalid"):
        aocsp.verify(der, pki.good.cert, pki.ca.cert)


def test_same_serial_other_issuer(pki: PKI) -> None:
    ca, key = pki.ca.cert, pki.ca.key
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=b"\x01" * 20,
            issuer_key_hash=b"\x02" * 20,
            serial_number=pki.good.cert.serial_number,
            algorithm=hashes.SHA1(),
            cert_status=GOOD,
            this_update=now(),
            next_update=now() + datetime.timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, ca)
    )
    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(OCSPError, match="different issuer"):
        aocsp.verify(der, pki.good.cert, ca)


def test_response_times(pki: PKI) -> None:
    ca, key, leaf = pki.ca.cert, pki.ca.key, pki.good.cert
    stale = build_response(
        leaf,
        ca,
        ca,
        key,
        this_update=now() - datetime.timedelta(days=2),
        next_update=now() - datetime.timedelta(minutes=1),
    )
    with pytest.raises(OCSPError, match="stale"):
        aocsp.verify(stale, leaf, ca)
    # ... but it was fine back then
    then = now() - datetime.timedelta(days=1)
    assert aocsp.verify(stale, leaf, ca, now=then).status == "good"
    assert aocsp.verify(stale, leaf, ca, now=then.replace(tzinfo=None)).status == "good"

    future = build_response(leaf, ca, ca, key, this_update=now() + datetime.timedelta(hours=1))
    with pytest.raises(OCSPError, match=r"thisUpdate .* in the future"):
        aocsp.verify(future, leaf, ca)
    skewed = build_response(leaf, ca, ca, key, this_update=now() + datetime.timedelta(minutes=2))
    assert aocsp.verify(skewed, leaf, ca).status == "good"  # within the 5 min skew

    old = build_response(
        leaf, ca, ca, key, this_update=now() - datetime.timedelta(hours=2), next_update=None
    )
    assert aocsp.verify(old, leaf, ca).next_update is None
    assert aocsp.verify(old, leaf, ca, max_age=datetime.timedelta(hours=3)).status == "good"
    with pytest.raises(OCSPError, match="too old"):
        aocsp.verify(old, leaf, ca, max_age=datetime.timedelta(hours=1))


@pytest.mark.parametrize(
    "status",
    [ocsp.OCSPResponseStatus.TRY_LATER, ocsp.OCSPResponseStatus.UNAUTHORIZED],
)
def test_unsuccessful_response(pki: PKI, status: ocsp.OCSPResponseStatus) -> None:
    der = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )
    with pytest.raises(OCSPError, match=status.name):
        aocsp.verify(der, pki.good.cert, pki.ca.cert)


@pytest.mark.parametrize("junk", [b"", b"not der", b"\x30\x03\x0a\x01\x00"])
def test_malformed_response(pki: PKI, junk: bytes) -> None:
    with pytest.raises(OCSPError):
        aocsp.verify(junk, pki.good.cert, pki.ca.cert)


@pytest.fixture(scope="module")
def mutation_material(tmp_path_factory: pytest.TempPathFactory) -> tuple[PKI, list[bytes]]:
    pki = make_pki(tmp_path_factory.mktemp("mut"))
    ders = [
        build_response(pki.good.cert, pki.ca.cert, pki.ca.cert, pki.ca.key),
        build_response(pki.good.cert, pki.ca.cert, pki.responder.cert, pki.responder.key),
        build_response(pki.revoked.cert, pki.ca.cert, pki.ca.cert, pki.ca.key, status=REVOKED),
    ]
    return pki, ders


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_responses_only_raise_ocsp_error(
    mutation_material: tuple[PKI, list[bytes]], data: st.DataObject
) -> None:
    """Any corruption of a valid response is an OCSPError (or, if harmless, a valid status)."""
    pki, ders = mutation_material
    index = data.draw(st.integers(0, len(ders) - 1))
    der = bytearray(ders[index])
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(der) - 1))
        der[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(der)))
    cert = pki.revoked.cert if index == 2 else pki.good.cert
    try:
        status = aocsp.verify(bytes(der[:cut]), cert, pki.ca.cert)
    except OCSPError:
        return
    assert status.status == ("revoked" if index == 2 else "good")


# ============================================================================ fetch: HTTP cases


async def read_request(reader: asyncio.StreamReader) -> dict[str, object]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return {
        "method": method,
        "target": target,
        "version": version,
        "headers": headers,
        "body": body,
    }


@contextlib.asynccontextmanager
async def http_server(
    reply: Callable[[asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[tuple[str, list[dict[str, object]]]]:
    """A one-shot-per-connection HTTP server on 127.0.0.1; yields (url base, requests seen)."""
    seen: list[dict[str, object]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.append(await read_request(reader))
            await reply(writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


def canned(*parts: bytes) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def reply(writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()

    return reply


@pytest.fixture
def good_der(pki: PKI) -> bytes:
    return build_response(pki.good.cert, pki.ca.cert, pki.ca.cert, pki.ca.key)


def ok_head(length: int | None, content_type: bytes = b"application/ocsp-response") -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n"
    if length is not None:
        head += b"Content-Length: %d\r\n" % length
    return head + b"Connection: close\r\n\r\n"


async def test_fetch_request_shape(pki: PKI, good_der: bytes) -> None:
    async with http_server(canned(ok_head(len(good_der)), good_der)) as (base, seen):
        der = await aocsp.fetch(pki.good.cert, pki.ca.cert, url=base + "/ocsp/x?y=1", timeout=5)
    assert der == good_der
    assert aocsp.verify(der, pki.good.cert, pki.ca.cert).status == "good"
    (request,) = seen
    assert request["method"] == "POST" and request["target"] == "/ocsp/x?y=1"
    assert request["version"] in ("HTTP/1.0", "HTTP/1.1")
    headers = request["headers"]
    assert isinstance(headers, dict)
    assert headers["content-type"] == "application/ocsp-request"
    assert headers["host"] == base.removeprefix("http://")
    body = request["body"]
    assert isinstance(body, bytes)
    assert ocsp.load_der_ocsp_request(body).serial_number == pki.good.cert.serial_number


async def test_fetch_body_framings(pki: PKI, good_der: bytes) -> None:
    half = len(good_der) // 2
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % half
        + good_der[:half]
        + b"\r\n"
        + b"%x;ext=1\r\n" % (len(good_der) - half)
        + good_der[half:]
        + b"\r\n0\r\n\r\n"
    )
    replies = [
        canned(ok_head(None), good_der[:10], good_der[10:]),  # to EOF, no Content-Length
        canned(chunked),
        canned(b"HTTP/1.1 100 Continue\r\n\r\n", ok_head(len(good_der)), good_der),
        canned(ok_head(len(good_der), b"Application/OCSP-Response; x=y"), good_der),
    ]
    for reply in replies:
        async with http_server(reply) as (base, _):
            assert await aocsp.fetch(pki.good.cert, pki.ca.cert, url=base, timeout=5) == good_der


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (canned(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"), "HTTP 404 Not Found"),
        (canned(b"HTTP/1.0 500 Oops\r\n\r\n"), "HTTP 500"),
        (canned(ok_head(5, b"text/html"), b"<h1/>"), "Content-Type 'text/html'"),
        (canned(ok_head(7), b"garbage"), "not an OCSP response"),
        (canned(ok_head(None), b"garbage to EOF"), "not an OCSP response"),
        (canned(b"SSH-2.0-OpenSSH\r\n\r\n"), "did not answer with HTTP"),
        (canned(ok_head(1000), b"short"), "closed the connection mid-response"),
        (canned(ok_head(10**9)), "too large"),
        (canned(b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response"), "inside"),
        (canned(b""), "without an answer"),
    ],
)
async def test_fetch_http_errors(
    pki: PKI, reply: Callable[[asyncio.StreamWriter], Awaitable[None]], match: str
) -> None:
    async with http_server(reply) as (base, _):
        with pytest.raises(OCSPError, match=match):
            await aocsp.fetch(pki.good.cert, pki.ca.cert, url=base + "/", timeout=5)


async def test_fetch_timeout_does_not_block_loop(pki: PKI) -> None:
    release = asyncio.Event()

    async def stall(writer: asyncio.StreamWriter) -> None:
        await release.wait()

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with http_server(stall) as (base, _):
        task = asyncio.create_task(ticker())
        started = time.monotonic()
        try:
            with pytest.raises(OCSPTimeoutError, match=r"did not answer within 0\.3 s") as info:
                await aocsp.fetch(pki.good.cert, pki.ca.cert, url=base, timeout=0.3)
        finally:
            task.cancel()
            release.set()
        elapsed = time.monotonic() - started
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, OCSPError)
    assert 0.25 < elapsed < 3
    assert ticks >= 10  # the loop kept running while fetch waited


async def test_fetch_connection_refused(pki: PKI) -> None:
    with held_port() as port, pytest.raises(OCSPError, match="cannot connect"):
        await aocsp.fetch(pki.good.cert, pki.ca.cert, url=f"http://127.0.0.1:{port}/", timeout=5)


async def test_fetch_bad_arguments(pki: PKI) -> None:
    with pytest.raises(ValueError, match="https"):
        await aocsp.fetch(pki.good.cert, pki.ca.cert, url="https://127.0.0.1/")
    with pytest.raises(ValueError, match="http://"):
        await aocsp.fetch(pki.good.cert, pki.ca.cert, url="ftp://127.0.0.1/")
    with pytest.raises(ValueError, match="no host"):
        await aocsp.fetch(pki.good.cert, pki.ca.cert, url="http:///path")
    with pytest.raises(ValueError, match="timeout"):
        await aocsp.fetch(pki.good.cert, pki.ca.cert, timeout=0)
    with pytest.raises(OCSPError, match="no OCSP responder URL"):
        await aocsp.fetch(pki.ca.cert, pki.ca.cert)
