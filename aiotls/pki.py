"""A small PKI for demos, examples, tests and local development.

:func:`make_ca` creates a certificate authority; :meth:`CA.issue` signs leaf
certificates for host names and IP addresses (servers) or a common name
(clients). Everything is PEM bytes, ready for
``create_secure_context(key=..., cert=...)`` and ``ca=...``::

    ca = make_ca("aiotls demo CA")
    key_pem, chain_pem = ca.issue(["localhost", "127.0.0.1"])

A CA kept on disk (``aiotls cert ca`` writes :attr:`CA.cert_pem` and
:attr:`CA.key_pem`) comes back with :func:`load_ca`; :func:`make_csr` and
:func:`make_pkcs12` cover the rest of the usual ``openssl`` recipes.

Keys are ECDSA P-256 by default (RSA 2048 on request); certificates are short-lived
unless a ``validity`` is given. Built on ``cryptography`` alone. This is not a
production CA: nothing can be revoked.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA", "KeyType", "load_ca", "make_ca", "make_csr", "make_pkcs12"]

#: The key algorithms :meth:`CA.issue` can make.
KeyType = Literal["ecdsa", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_CA_VALIDITY = datetime.timedelta(days=7)
_LEAF_VALIDITY = datetime.timedelta(days=1)
_BACKDATE = datetime.timedelta(minutes=5)  # tolerate small clock skew between peers


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key_type: expected 'ecdsa' or 'rsa', got {key_type!r}")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _general_name(host: str) -> x509.GeneralName:
    """An IP address SAN for address literals, a DNS SAN otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def _subject_alt_name(hostnames: Iterable[str]) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([_general_name(n) for n in hostnames])


class CA:
    """A throwaway certificate authority held in memory (see :func:`make_ca`)."""

    def __init__(self, name: str, key: PrivateKey, cert: x509.Certificate) -> None:
        self.name = name
        self._key = key
        self.cert = cert

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate as PEM: what clients pass as ``ca=``."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The CA's private key as unencrypted PKCS#8 PEM, to keep it (see :func:`load_ca`)."""
        return _key_pem(self._key)

    def issue(
        self,
        hostnames: Iterable[str],
        *,
        key_type: KeyType = "ecdsa",
        common_name: str | None = None,
        validity: datetime.timedelta = _LEAF_VALIDITY,
    ) -> tuple[bytes, bytes]:
        """Make a key and a certificate for ``hostnames``; returns ``(key_pem, chain_pem)``.

        Each name becomes a subjectAltName (an IP address entry for address
        literals, DNS otherwise); the first is also the subject's common name
        unless ``common_name`` is given. The certificate is good for both
        serverAuth and clientAuth. ``chain_pem`` is ready for ``cert=``: the leaf
        alone, since this CA signs directly and peers already hold the root (a
        server never needs to send it).
        """
        names = list(hostnames)
        if not names and common_name is None:
            raise ValueError("issue: give at least one host name (or a common_name)")
        key = _new_key(key_type)
        now = datetime.datetime.now(datetime.UTC)
        usage_sign = isinstance(key, ec.EllipticCurvePrivateKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or names[0])])
            )
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + validity, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    # RSA key transport (TLS 1.2 static RSA) needs keyEncipherment.
                    key_encipherment=not usage_sign,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(_subject_alt_name(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)

    def ocsp_response(self, cert: x509.Certificate, *, revoked: bool = False) -> bytes:
        """A DER OCSP response for ``cert``, signed by this CA, valid for an hour."""
        now = datetime.datetime.now(datetime.UTC)
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=cert,
            issuer=self.cert,
            algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
            this_update=now - datetime.timedelta(minutes=1),
            next_update=now + datetime.timedelta(hours=1),
            revocation_time=now - datetime.timedelta(minutes=1) if revoked else None,
            revocation_reason=None,
        )
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self.cert)
        response = builder.sign(self._key, hashes.SHA256())  # demo CAs are EC or RSA
        return response.public_bytes(serialization.Encoding.DER)

    def crl(self, revoked: Iterable[x509.Certificate] = ()) -> bytes:
        """A PEM CRL signed by this CA revoking ``revoked``, valid for a day: ``crl=``."""
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + datetime.timedelta(days=1))
        )
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(now - _BACKDATE)
                .build()
            )
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def __repr__(self) -> str:
        return f"<CA {self.name!r}>"


def make_ca(
    name: str = "aiotls ephemeral CA",
    *,
    key_type: KeyType = "ecdsa",
    validity: datetime.timedelta = _CA_VALIDITY,
) -> CA:
    """Create a self-signed root CA named ``name`` (its common name and organization)."""
    key = _new_key(key_type)
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return CA(name, key, cert)


def load_ca(cert_pem: bytes, key_pem: bytes, *, password: bytes | None = None) -> CA:
    """The CA whose certificate and key were saved as PEM (``cert_pem``, ``key_pem``).

    Raises ValueError when the certificate is not a CA's, the key is not ECDSA or
    RSA, or the key does not belong to the certificate.
    """
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"CA key: expected an ECDSA or RSA key, got {type(key).__name__}")
    if key.public_key() != cert.public_key():
        raise ValueError("CA key: it does not belong to the CA certificate")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError("CA certificate: it is not a CA (no basicConstraints CA:TRUE)")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else cert.subject.rfc4514_string()
    return CA(name, key, cert)


def make_csr(
    hostnames: Iterable[str],
    *,
    key_type: KeyType = "ecdsa",
    common_name: str | None = None,
) -> tuple[bytes, bytes]:
    """A new key and a certificate signing request for ``hostnames``: ``(key_pem, csr_pem)``.

    The names become subjectAltNames (as in :meth:`CA.issue`); the first is the
    common name unless ``common_name`` is given.
    """
    names = list(hostnames)
    if not names and common_name is None:
        raise ValueError("make_csr: give at least one host name (or a common_name)")
    key = _new_key(key_type)
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or names[0])])
    )
    if names:
        builder = builder.add_extension(_subject_alt_name(names), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def make_pkcs12(
    key_pem: bytes,
    chain_pem: bytes,
    passphrase: bytes,
    *,
    extra_certs_pem: bytes | None = None,
    friendly_name: bytes | None = None,
) -> bytes:
    """A PKCS#12 bundle (what ``pfx=`` takes) of a key and its chain, encrypted with
    ``passphrase``.

    ``chain_pem`` starts with the key's certificate; the certificates after it and
    those in ``extra_certs_pem`` (a CA, say) go in as the bundle's other certificates.
    """
    if not passphrase:
        raise ValueError("make_pkcs12: passphrase must not be empty")
    key = serialization.load_pem_private_key(key_pem, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"key: expected an ECDSA or RSA key, got {type(key).__name__}")
    certs = x509.load_pem_x509_certificates(chain_pem)
    if key.public_key() != certs[0].public_key():
        raise ValueError("key: it does not belong to the first certificate of the chain")
    others = certs[1:] + (
        x509.load_pem_x509_certificates(extra_certs_pem) if extra_certs_pem else []
    )
    return pkcs12.serialize_key_and_certificates(
        friendly_name,
        key,
        certs[0],
        others or None,
        serialization.BestAvailableEncryption(passphrase),
    )
