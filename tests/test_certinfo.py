"""node_certificate and stdlib_peercert against what node and the stdlib's ssl report.

Intended differences from node (none shows up in the certificates below):
- node names attribute types from OpenSSL's whole object table; aiotls knows the usual ones
  (X.520, emailAddress, DC, UID, EV jurisdiction, ...) and gives other types as dotted OIDs;
- an EC ``pubkey`` is always the uncompressed point (node keeps a compressed point compressed);
- with ``detailed``, only ``chain`` is searched for issuers: node also asks its trust store,
  which adds the root when the peer did not send it (pass the verified chain to match).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID as AIA
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from aiotls.certinfo import node_certificate, stdlib_peercert

NODE = Path(__file__).parent / "node"
A = x509.NameAttribute
PEM = serialization.Encoding.PEM


@dataclass
class Issued:
    cert: x509.Certificate
    key_pem: bytes = b""
    ca_pem: bytes = b""  # what a client trusts to verify it


def _load(blob: trustme.Blob) -> x509.Certificate:
    return x509.load_pem_x509_certificate(blob.bytes())


def _key_pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _from_trustme(ca: trustme.CA, leaf: trustme.LeafCert) -> Issued:
    return Issued(_load(leaf.cert_chain_pems[0]), leaf.private_key_pem.bytes(), ca.cert_pem.bytes())


def _build(
    subject: list[x509.NameAttribute[Any]],
    key: Any,
    *,
    signer: tuple[Any, x509.Name] | None = None,
    serial: int = 0x0A,
    extensions: tuple[x509.ExtensionType, ...] = (),
) -> x509.Certificate:
    """A certificate for ``key``, self-signed unless ``signer`` is (key, name) of a CA."""
    name = x509.Name(subject)
    signing_key, issuer = signer or (key, name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(datetime.datetime(2024, 1, 5, 3, 4, 5, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2034, 11, 29, 9, 18, 17, tzinfo=datetime.UTC))
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    algorithm = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signing_key, algorithm)


def _kitchen_sink(ca: trustme.CA) -> Issued:
    """Repeated OU, many attribute types, every kind of altname, AIA, EKU, CRL points."""
    ca_cert = _load(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    oid = ObjectIdentifier
    subject = [
        A(NameOID.COUNTRY_NAME, "US"), A(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
        A(NameOID.LOCALITY_NAME, "SF"), A(NameOID.ORGANIZATION_NAME, "Org, Inc."),
        A(NameOID.ORGANIZATIONAL_UNIT_NAME, "u1"), A(NameOID.ORGANIZATIONAL_UNIT_NAME, "u2"),
        A(NameOID.ORGANIZATIONAL_UNIT_NAME, "u3"), A(NameOID.COMMON_NAME, "héllo"),
        A(NameOID.EMAIL_ADDRESS, "a@b.c"), A(NameOID.SURNAME, "s"), A(NameOID.GIVEN_NAME, "g"),
        A(NameOID.SERIAL_NUMBER, "123"), A(NameOID.TITLE, "t"), A(NameOID.DOMAIN_COMPONENT, "dc"),
        A(NameOID.USER_ID, "uid"), A(NameOID.STREET_ADDRESS, "st"), A(NameOID.POSTAL_CODE, "94"),
        A(NameOID.BUSINESS_CATEGORY, "bc"), A(NameOID.JURISDICTION_COUNTRY_NAME, "US"),
        A(NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME, "DE"),
        A(NameOID.JURISDICTION_LOCALITY_NAME, "W"), A(NameOID.PSEUDONYM, "p"),
        A(NameOID.GENERATION_QUALIFIER, "III"), A(NameOID.DN_QUALIFIER, "q"),
        A(NameOID.INITIALS, "I"), A(NameOID.ORGANIZATION_IDENTIFIER, "oi"),
        A(NameOID.UNSTRUCTURED_NAME, "un"), A(oid("2.5.4.13"), "desc"), A(oid("2.5.4.41"), "n"),
        A(oid("2.5.4.72"), "role"), A(oid("1.2.3.4.5"), "custom"),
    ]  # fmt: skip
    multi = x509.RelativeDistinguishedName([A(NameOID.COMMON_NAME, "m"), A(oid("1.2.3.9"), "x")])
    dir_name = x509.Name(
        [x509.RelativeDistinguishedName([A(NameOID.COUNTRY_NAME, "US")]), multi,
         x509.RelativeDistinguishedName([A(NameOID.COMMON_NAME, "#é, \"q\"+; ")])]
    )  # fmt: skip
    ip = ipaddress.ip_address
    sans = [
        x509.DNSName("a.example"), x509.DNSName("*.b.example"),
        x509.IPAddress(ip("127.0.0.1")), x509.IPAddress(ip("::1")),
        x509.IPAddress(ip("fe80::abcd:1")), x509.IPAddress(ip("::ffff:1.2.3.4")),
        x509.RFC822Name("x@y"), x509.UniformResourceIdentifier("https://h/p?a=1,2"),
        x509.UniformResourceIdentifier("spiffe://x/y'z"), x509.DNSName('q"uo\\te'),
        x509.DNSName("tab\tx"), x509.RegisteredID(oid("1.3.6.1.5.5.7.48.1")),
        x509.DirectoryName(dir_name), x509.DirectoryName(x509.Name([A(NameOID.COMMON_NAME, "d")])),
        x509.OtherName(oid("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x06u@x.yz"),  # UPN
        x509.OtherName(oid("1.3.6.1.4.1.311.20.2.3"), "\x0c\x05a,éb".encode()),
        x509.OtherName(oid("1.3.6.1.5.5.7.8.7"), b"\x16\x06_x.com"),  # SRVName
        x509.OtherName(oid("1.2.3"), b"\x0c\x01a"),
    ]  # fmt: skip
    uri = x509.UniformResourceIdentifier
    aia = [
        x509.AccessDescription(AIA.OCSP, uri("http://ocsp.example/")),
        x509.AccessDescription(AIA.OCSP, uri("http://ocsp2.example/a,b")),
        x509.AccessDescription(AIA.CA_ISSUERS, uri("http://ca.example/ca.der")),
        x509.AccessDescription(oid("1.3.6.1.5.5.7.48.5"), uri("http://repo.example/")),
        x509.AccessDescription(oid("1.2.3.4"), x509.DNSName("h.example")),
        x509.AccessDescription(AIA.OCSP, x509.IPAddress(ip("1.2.3.4"))),
        x509.AccessDescription(AIA.CA_ISSUERS, x509.DirectoryName(dir_name)),
    ]
    crl = x509.DistributionPoint([uri("http://crl.example/1.crl")], None, None, None)
    eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH, oid("1.2.3.4")]
    extensions = (
        x509.SubjectAlternativeName(sans),
        x509.AuthorityInformationAccess(aia),
        x509.ExtendedKeyUsage(eku),
        x509.CRLDistributionPoints([crl]),
    )
    cert = _build(subject, key, signer=(ca_key, ca_cert.subject), extensions=extensions)
    return Issued(cert, _key_pem(key), ca.cert_pem.bytes())


def _self_signed(key: Any, serial: int, *extensions: x509.ExtensionType) -> Issued:
    return Issued(_build([A(NameOID.COMMON_NAME, "self")], key, serial=serial,
                         extensions=extensions))  # fmt: skip


CA_EXTENSIONS = (
    x509.BasicConstraints(ca=True, path_length=0),
    x509.KeyUsage(False, False, False, False, False, True, True, False, False),
)
NAMES = [
    "rsa_leaf", "ecdsa_leaf", "rsa_ca", "ecdsa_ca", "intermediate", "kitchen_sink", "p384_ca",
    "p521", "secp256k1", "p224", "ed25519", "rsa_odd", "ca_without_certsign",
]  # fmt: skip


@pytest.fixture(scope="module")
def certs() -> dict[str, Issued]:
    rsa_ca = trustme.CA(key_type=trustme.KeyType.RSA)
    ecdsa_ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    names = ("localhost", "127.0.0.1", "::1", "example.test")
    rsa_leaf = rsa_ca.issue_cert(*names, key_type=trustme.KeyType.RSA)
    ecdsa_leaf = ecdsa_ca.issue_cert(*names, organization_unit_name="unit")
    made = {
        "rsa_leaf": _from_trustme(rsa_ca, rsa_leaf),
        "ecdsa_leaf": _from_trustme(ecdsa_ca, ecdsa_leaf),
        "rsa_ca": Issued(_load(rsa_ca.cert_pem)),
        "ecdsa_ca": Issued(_load(ecdsa_ca.cert_pem)),
        "intermediate": Issued(_load(ecdsa_ca.create_child_ca().cert_pem)),
        "kitchen_sink": _kitchen_sink(ecdsa_ca),
        "p384_ca": _self_signed(ec.generate_private_key(ec.SECP384R1()), 2**158, *CA_EXTENSIONS),
        "p521": _self_signed(ec.generate_private_key(ec.SECP521R1()), 0x80),
        "secp256k1": _self_signed(ec.generate_private_key(ec.SECP256K1()), 256),
        "p224": _self_signed(ec.generate_private_key(ec.SECP224R1()), 1),
        "ed25519": _self_signed(ed25519.Ed25519PrivateKey.generate(), 2**159 - 1),
        "rsa_odd": _self_signed(rsa.generate_private_key(3, 1031), 0xFF00),
        "ca_without_certsign": _self_signed(
            ec.generate_private_key(ec.SECP256R1()),
            7,
            x509.BasicConstraints(ca=True, path_length=None),
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
        ),
    }
    assert list(made) == NAMES
    return made


@pytest.fixture(scope="module")
def node_view(certs: dict[str, Issued], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """node's getPeerCertificate() object for every certificate, from one node process."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    folder = tmp_path_factory.mktemp("certinfo")
    paths = []
    for name, issued in certs.items():
        paths.append(folder / f"{name}.pem")
        paths[-1].write_bytes(issued.cert.public_bytes(PEM))
    script = [str(NODE / "cert_info.js"), *map(str, paths)]
    out = subprocess.run(["node", *script], capture_output=True, check=True, timeout=30).stdout
    return dict(zip(NAMES, json.loads(out), strict=True))


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    return {key: value.hex() if isinstance(value, bytes) else value for key, value in info.items()}


@pytest.mark.parametrize("name", NAMES)
def test_matches_node(name: str, certs: dict[str, Issued], node_view: Any) -> None:
    expected = dict(node_view[name])
    keys = expected.pop("keys")
    ours = _jsonable(node_certificate(certs[name].cert))
    assert list(ours) == keys  # the same keys, in node's order
    for key in keys:
        assert ours[key] == expected[key], key


def test_kitchen_sink_fields(certs: dict[str, Issued]) -> None:
    cert = certs["kitchen_sink"].cert
    info = node_certificate(cert)
    assert info["subject"]["OU"] == ["u1", "u2", "u3"]
    assert info["subject"]["CN"] == "héllo"
    assert info["subject"]["1.2.3.4.5"] == "custom"
    ca_cert = x509.load_pem_x509_certificate(certs["kitchen_sink"].ca_pem)
    assert info["issuer"] == node_certificate(ca_cert)["subject"]
    assert info["subjectaltname"] == ", ".join([
        "DNS:a.example", "DNS:*.b.example", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1",
        "IP Address:FE80:0:0:0:0:0:ABCD:1", "IP Address:0:0:0:0:0:FFFF:102:304", "email:x@y",
        r'URI:"https://h/p?a=1\u002c2"', "URI:\"spiffe://x/y'z\"", r'DNS:"q\"uo\\te"',
        r'DNS:"tab\u0009x"', "Registered ID:1.3.6.1.5.5.7.48.1",
        r'DirName:"CN=\\#é\\\u002c \\\"q\\\"\\+\\;\\ \u002cCN=m+1.2.3.9=#0C0178\u002cC=US"',
        "DirName:CN=d", "othername:UPN:u@x.yz", r'othername:"UPN:a\u002céb"',
        "othername:SRVName:_x.com", "othername:<unsupported>",
    ])  # fmt: skip
    assert info["infoAccess"]["OCSP - URI"] == ["http://ocsp.example/", "http://ocsp2.example/a,b"]
    assert info["infoAccess"]["CA Issuers - URI"] == ["http://ca.example/ca.der"]
    assert info["infoAccess"]["CA Repository - URI"] == ["http://repo.example/"]
    assert info["ext_key_usage"] == ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2", "1.2.3.4"]
    assert (info["valid_from"], info["valid_to"]) == (
        "Jan  5 03:04:05 2024 GMT",
        "Nov 29 09:18:17 2034 GMT",
    )
    assert info["serialNumber"] == "0A"
    assert info["raw"] == cert.public_bytes(serialization.Encoding.DER)
    assert info["fingerprint256"] == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    assert (info["bits"], info["asn1Curve"], info["nistCurve"], info["ca"]) == (
        256, "prime256v1", "P-256", False
    )  # fmt: skip
    assert "issuerCertificate" not in info


def test_rsa_fields(certs: dict[str, Issued]) -> None:
    info = node_certificate(certs["rsa_odd"].cert)
    key = certs["rsa_odd"].cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert (info["bits"], info["exponent"], info["serialNumber"]) == (1031, "0x3", "FF00")
    assert info["modulus"] == f"{key.public_numbers().n:X}"
    der = serialization.Encoding.DER
    assert info["pubkey"] == key.public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert "nistCurve" not in node_certificate(certs["secp256k1"].cert)
    assert not {"bits", "pubkey"} & set(node_certificate(certs["ed25519"].cert))


# --- detailed=True: issuerCertificate -----------------------------------------------------


@pytest.fixture(scope="module")
def chain() -> tuple[trustme.CA, trustme.LeafCert]:
    root = trustme.CA()
    return root, root.create_child_ca().issue_cert("localhost")


def _links(info: dict[str, Any]) -> tuple[list[str], bool]:
    """The fingerprint256 of each link, and whether the last is its own issuer."""
    fingerprints = [info["fingerprint256"]]
    while "issuerCertificate" in info and info["issuerCertificate"] is not info:
        info = info["issuerCertificate"]
        fingerprints.append(info["fingerprint256"])
    return fingerprints, info.get("issuerCertificate") is info


def test_detailed_chain(chain: tuple[trustme.CA, trustme.LeafCert]) -> None:
    root_ca, leaf = chain
    leaf_cert, middle = map(_load, leaf.cert_chain_pems)
    root = _load(root_ca.cert_pem)
    fps = [node_certificate(c)["fingerprint256"] for c in (leaf_cert, middle, root)]

    info = node_certificate(leaf_cert, [leaf_cert, middle, root], detailed=True)
    assert _links(info) == (fps, True)
    top = info["issuerCertificate"]["issuerCertificate"]
    assert top["issuerCertificate"] is top  # circular, as in node
    assert top["subject"] == node_certificate(root)["subject"]
    # order does not matter, the leaf need not lead, a missing root ends the chain
    assert _links(node_certificate(leaf_cert, [root, middle], detailed=True)) == (fps, True)
    assert _links(node_certificate(leaf_cert, [leaf_cert, middle], detailed=True)) == (
        fps[:2],
        False,
    )
    assert _links(node_certificate(leaf_cert, [root], detailed=True)) == (fps[:1], False)
    assert "issuerCertificate" not in node_certificate(leaf_cert, [middle, root])
    # a self-signed certificate is its own issuer unless its key usage forbids signing
    assert _links(node_certificate(root, detailed=True)) == (fps[2:], True)


def test_self_signed_without_certsign(certs: dict[str, Issued]) -> None:
    cert = certs["ca_without_certsign"].cert
    info = node_certificate(cert, [cert], detailed=True)
    assert "issuerCertificate" not in info and info["ca"] is False


def _node_peer_chain(tmp_path: Path, key: bytes, chain_pem: bytes, ca: bytes) -> Any:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    files = []
    for name, data in (("key.pem", key), ("chain.pem", chain_pem), ("ca.pem", ca)):
        files.append(str(tmp_path / name))
        (tmp_path / name).write_bytes(data)
    script = str(NODE / "peer_chain.js")
    out = subprocess.run(["node", script, *files], capture_output=True, check=True, timeout=30)
    return json.loads(out.stdout)


def test_detailed_chain_matches_node(
    chain: tuple[trustme.CA, trustme.LeafCert], tmp_path: Path
) -> None:
    root_ca, leaf = chain
    sent = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    node = _node_peer_chain(tmp_path, leaf.private_key_pem.bytes(), sent, root_ca.cert_pem.bytes())
    # node adds the root from its trust store; aiotls is handed the verified chain
    certs = [*map(_load, leaf.cert_chain_pems), _load(root_ca.cert_pem)]
    fingerprints, circular = _links(node_certificate(certs[0], certs, detailed=True))
    assert {"fingerprints": fingerprints, "circular": circular} == node


def test_self_signed_without_certsign_matches_node(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    no_sign = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    cert = _build([A(NameOID.COMMON_NAME, "self")], key, extensions=(no_sign,)).public_bytes(PEM)
    key_pem = _key_pem(key)
    # node finds the same certificate again in its trust store (links it, then stops there)
    assert _node_peer_chain(tmp_path, key_pem, cert, cert)["circular"] is False
    info = node_certificate(x509.load_pem_x509_certificate(cert), detailed=True)
    assert _links(info) == ([info["fingerprint256"]], False)


# --- stdlib_peercert against ssl.SSLSocket.getpeercert() -----------------------------------


def _stdlib_getpeercert(issued: Issued, tmp_path: Path) -> dict[str, Any]:
    """Serve ``issued`` with the stdlib's ssl on loopback; what a verifying client sees."""
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(issued.cert.public_bytes(PEM))
    key_file.write_bytes(issued.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.load_verify_locations(cadata=issued.ca_pem.decode())
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            conn, _ = listener.accept()
            conn.settimeout(10)
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        raw = socket.create_connection(listener.getsockname(), timeout=10)
        with client_ctx.wrap_socket(raw) as tls:
            peercert = tls.getpeercert()
            tls.sendall(b"x")
        thread.join(10)
    assert peercert is not None
    return dict(peercert)


@pytest.mark.parametrize("name", ["rsa_leaf", "ecdsa_leaf", "kitchen_sink"])
def test_stdlib_peercert_matches_ssl(name: str, certs: dict[str, Issued], tmp_path: Path) -> None:
    real = _stdlib_getpeercert(certs[name], tmp_path)
    ours = stdlib_peercert(certs[name].cert)
    assert list(ours) == list(real)
    assert ours == real


def test_stdlib_peercert_shape(certs: dict[str, Issued]) -> None:
    ours = stdlib_peercert(certs["kitchen_sink"].cert)
    assert ours["subject"][4:7] == tuple((("organizationalUnitName", f"u{i}"),) for i in (1, 2, 3))
    assert ours["version"] == 3 and ours["serialNumber"] == "0A"
    assert ours["notAfter"] == "Nov 29 09:18:17 2034 GMT"
    assert ours["subjectAltName"][:4] == (
        ("DNS", "a.example"),
        ("DNS", "*.b.example"),
        ("IP Address", "127.0.0.1"),
        ("IP Address", "0:0:0:0:0:0:0:1"),
    )
    assert ours["OCSP"] == ("http://ocsp.example/", "http://ocsp2.example/a,b")
    assert ours["caIssuers"] == ("http://ca.example/ca.der",)
    assert ours["crlDistributionPoints"] == ("http://crl.example/1.crl",)
    assert "OCSP" not in stdlib_peercert(certs["rsa_leaf"].cert)
