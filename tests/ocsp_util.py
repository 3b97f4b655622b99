"""OCSP test helpers: a throwaway PKI and a real ``openssl ocsp`` responder.

Reusable by any test that needs OCSP material (the client-side checks in
``test_ocsp.py`` and server-side stapling tests)::

    pki = make_pki(tmp_path)                   # CA, delegated responder, good + revoked leaf
    with OCSPResponder.for_pki(pki) as responder:
        der = await aiotls.ocsp.fetch(pki.good.cert, pki.ca.cert)   # AIA -> responder.url

Every certificate is made with ``cryptography``; leaves carry an AIA OCSP URL
``http://127.0.0.1:<port>/`` for a port held (bound, not listening) from when the
PKI is made, which is the port :meth:`OCSPResponder.for_pki` then serves on.

Note: ``openssl ocsp -port`` (OpenSSL 3.0) takes a bare port number and binds
the wildcard address; there is no option to bind loopback only. Clients here
only ever connect to 127.0.0.1.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

UTC = datetime.UTC
_BACKDATE = datetime.timedelta(minutes=5)
_VALIDITY = datetime.timedelta(days=2)


# --------------------------------------------------------------------------- keys and certs


def new_key(key_type: str = "ec") -> PrivateKey:
    """A fresh private key: ``"ec"`` (P-256), ``"rsa"`` (2048) or ``"ed25519"``."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}")


def sign_hash(key: PrivateKey) -> hashes.SHA256 | None:
    """The hash ``builder.sign`` wants for ``key`` (None for Ed25519)."""
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Issued:
    """A certificate, its key, and both as PEM files."""

    cert: x509.Certificate
    key: PrivateKey
    cert_path: Path
    key_path: Path

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)


def _write(directory: Path, stem: str, cert: x509.Certificate, key: PrivateKey) -> Issued:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert_pem(cert))
    key_path.write_bytes(key_pem(key))
    key_path.chmod(0o600)
    return Issued(cert, key, cert_path, key_path)


def make_ca_cert(
    name: str = "aiotls OCSP test CA", *, key_type: str = "ec"
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed root CA certificate and its key."""
    key = new_key(key_type)
    now = datetime.datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .sign(key, sign_hash(key))
    )
    return cert, key


def issue_cert(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    common_name: str,
    *,
    key_type: str = "ec",
    ocsp_url: str | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
    san: Sequence[str] = (),
    not_valid_before: datetime.datetime | None = None,
    not_valid_after: datetime.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """An end-entity certificate signed by ``ca_key``.

    ``eku=None`` leaves the extendedKeyUsage extension out; ``ocsp_url`` adds an
    AIA extension naming that OCSP responder; ``san`` entries are DNS names.
    """
    key = new_key(key_type)
    now = datetime.datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_valid_before or now - _BACKDATE)
        .not_valid_after(not_valid_after or now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if ocsp_url is not None:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(ocsp_url),
                    )
                ]
            ),
            critical=False,
        )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False
        )
    return builder.sign(ca_key, sign_hash(ca_key)), key


_held_sockets: list[socket.socket] = []
atexit.register(lambda: [sock.close() for sock in _held_sockets])


def held_port() -> int:
    """A port on 127.0.0.1 held for the rest of the test session (bound with SO_REUSEADDR,
    never listening): no other program's ephemeral bind takes it between the moment it
    goes into the certificates and the moment ``openssl ocsp`` binds it (which a socket
    bound with SO_REUSEADDR and not listening does not prevent)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    _held_sockets.append(sock)
    return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- the PKI


@dataclass
class PKI:
    """CA, delegated OCSP responder, a good and a revoked leaf, and the index file.

    Each of ``ca``, ``responder``, ``good``, ``revoked`` is an :class:`Issued`
    (``.cert``, ``.key``, ``.cert_path``, ``.key_path``, ``.cert_pem``, ``.key_pem``).
    """

    directory: Path
    ca: Issued
    responder: Issued
    good: Issued
    revoked: Issued
    ocsp_port: int
    ocsp_url: str
    revocation_time: datetime.datetime
    revocation_reason: x509.ReasonFlags
    index_path: Path
    extra: dict[str, Issued] = field(default_factory=dict)

    def issue(self, stem: str, common_name: str, **kw: object) -> Issued:
        """Issue another certificate from this CA (``kw`` as for :func:`issue_cert`)."""
        cert, key = issue_cert(self.ca.cert, self.ca.key, common_name, **kw)  # type: ignore[arg-type]
        issued = _write(self.directory, stem, cert, key)
        self.extra[stem] = issued
        return issued


def openssl_time(when: datetime.datetime) -> str:
    """``YYMMDDHHMMSSZ``, the UTCTime form ``index.txt`` uses."""
    return when.astimezone(UTC).strftime("%y%m%d%H%M%SZ")


def openssl_serial(serial: int) -> str:
    """The serial as ``openssl ocsp`` looks it up: upper-case hex, whole bytes (BN_bn2hex)."""
    text = f"{serial:X}"
    return "0" + text if len(text) % 2 else text


def index_line(
    cert: x509.Certificate,
    *,
    revoked_at: datetime.datetime | None = None,
    reason: x509.ReasonFlags | None = None,
) -> str:
    """One ``index.txt`` line: ``V`` (valid) or ``R`` (revoked at ``revoked_at``, ``reason``)."""
    subject = "/" + "/".join(cert.subject.rfc4514_string().split(",")[::-1])
    expiry = openssl_time(cert.not_valid_after_utc)
    serial = openssl_serial(cert.serial_number)
    if revoked_at is None:
        return f"V\t{expiry}\t\t{serial}\tunknown\t{subject}\n"
    revocation = openssl_time(revoked_at)
    if reason is not None:
        revocation += "," + reason.value
    return f"R\t{expiry}\t{revocation}\t{serial}\tunknown\t{subject}\n"


def make_pki(
    tmp_path: Path,
    *,
    port: int | None = None,
    key_type: str = "ec",
    responder_key_type: str = "rsa",
    leaf_names: Sequence[str] = ("localhost", "127.0.0.1"),
) -> PKI:
    """Make the whole OCSP PKI under ``tmp_path / "ocsp-pki"``.

    Writes ``ca.pem/.key``, ``responder.pem/.key`` (delegated responder: issued by
    the CA, OCSPSigning EKU), ``good.pem/.key`` and ``revoked.pem/.key`` (leaves
    for ``leaf_names``, serverAuth, AIA OCSP -> ``http://127.0.0.1:<port>/``) and
    ``index.txt`` (good is ``V``, revoked is ``R`` at ``revocation_time`` for
    keyCompromise). ``port`` defaults to a loopback port held for the session.
    """
    directory = tmp_path / "ocsp-pki"
    directory.mkdir(parents=True, exist_ok=True)
    port = port if port is not None else held_port()
    url = f"http://127.0.0.1:{port}/"
    ca_cert, ca_key = make_ca_cert(key_type=key_type)
    ca = _write(directory, "ca", ca_cert, ca_key)
    resp_cert, resp_key = issue_cert(
        ca_cert,
        ca_key,
        "aiotls OCSP responder",
        key_type=responder_key_type,
        eku=(ExtendedKeyUsageOID.OCSP_SIGNING,),
    )
    responder = _write(directory, "responder", resp_cert, resp_key)
    sans = [n for n in leaf_names if not re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+", n)]
    good_cert, good_key = issue_cert(
        ca_cert, ca_key, leaf_names[0], key_type=key_type, ocsp_url=url, san=sans
    )
    good = _write(directory, "good", good_cert, good_key)
    revoked_cert, revoked_key = issue_cert(
        ca_cert, ca_key, "revoked." + leaf_names[0], key_type=key_type, ocsp_url=url, san=sans
    )
    revoked = _write(directory, "revoked", revoked_cert, revoked_key)
    # Whole seconds: the index (UTCTime) cannot hold more.
    revoked_at = (datetime.datetime.now(UTC) - datetime.timedelta(hours=1)).replace(microsecond=0)
    reason = x509.ReasonFlags.key_compromise
    index_path = directory / "index.txt"
    index_path.write_text(
        index_line(good_cert) + index_line(revoked_cert, revoked_at=revoked_at, reason=reason)
    )
    return PKI(
        directory=directory,
        ca=ca,
        responder=responder,
        good=good,
        revoked=revoked,
        ocsp_port=port,
        ocsp_url=url,
        revocation_time=revoked_at,
        revocation_reason=reason,
        index_path=index_path,
    )


# --------------------------------------------------------------------------- responses in-process


def build_response(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    signer_cert: x509.Certificate,
    signer_key: PrivateKey,
    *,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    this_update: datetime.datetime | None = None,
    next_update: datetime.datetime | bool | None = True,
    revocation_time: datetime.datetime | None = None,
    revocation_reason: x509.ReasonFlags | None = None,
    include_certs: Sequence[x509.Certificate] | None = None,
    responder_id: ocsp.OCSPResponderEncoding = ocsp.OCSPResponderEncoding.HASH,
    cert_id_hash: hashes.HashAlgorithm | None = None,
) -> bytes:
    """A DER OCSP response for ``cert`` made with cryptography's OCSPResponseBuilder.

    ``next_update=True`` means thisUpdate + 1 day, ``None``/``False`` leaves it out.
    ``include_certs`` defaults to ``[signer_cert]`` unless the signer is the issuer.
    """
    now = datetime.datetime.now(UTC)
    this_update = this_update or now - datetime.timedelta(minutes=1)
    if next_update is True:
        next_update = this_update + datetime.timedelta(days=1)
    elif next_update is False:
        next_update = None
    if status is ocsp.OCSPCertStatus.REVOKED and revocation_time is None:
        revocation_time = now - datetime.timedelta(hours=1)
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert,
        issuer=issuer,
        algorithm=cert_id_hash or hashes.SHA1(),
        cert_status=status,
        this_update=this_update,
        next_update=next_update,
        revocation_time=revocation_time,
        revocation_reason=revocation_reason,
    )
    builder = builder.responder_id(responder_id, signer_cert)
    if include_certs is None:
        include_certs = [] if signer_cert == issuer else [signer_cert]
    if include_certs:
        builder = builder.certificates(list(include_certs))
    response = builder.sign(signer_key, sign_hash(signer_key))
    return response.public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------- openssl ocsp


class OCSPResponder:
    """A real ``openssl ocsp`` responder subprocess on a loopback-reachable port.

    ``with OCSPResponder(index=..., ca=..., rsigner=..., rkey=...) as r: r.url``.
    Startup waits (bounded) until openssl reports it is accepting; :meth:`close`
    kills the process by PID (idempotent). ``port=0`` lets openssl pick a free
    port (read back from its ``ACCEPT`` line); certificates that point at a fixed
    port need that port passed here (see :meth:`for_pki`).

    ``ndays``/``nmin`` set nextUpdate (without them openssl omits nextUpdate);
    ``nrequest`` makes openssl exit after that many requests; ``extra_args`` go
    on the command line as they are (e.g. ``["-badsig"]``, ``["-resp_no_certs"]``).
    The responder's stdout/stderr go to ``log_path``; :meth:`log` reads it.
    """

    def __init__(
        self,
        *,
        index: Path | str,
        ca: Path | str,
        rsigner: Path | str,
        rkey: Path | str,
        port: int = 0,
        rother: Path | str | None = None,
        ndays: int | None = None,
        nmin: int | None = None,
        nrequest: int | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | str | None = None,
        startup_timeout: float = 5.0,
        openssl: str = "openssl",
    ) -> None:
        self.port = port
        argv = [openssl, "ocsp", "-index", str(index), "-port", str(port)]
        argv += ["-rsigner", str(rsigner), "-rkey", str(rkey), "-CA", str(ca)]
        if rother is not None:
            argv += ["-rother", str(rother)]
        if ndays is not None:
            argv += ["-ndays", str(ndays)]
        if nmin is not None:
            argv += ["-nmin", str(nmin)]
        if nrequest is not None:
            argv += ["-nrequest", str(nrequest)]
        argv += list(extra_args)
        self.argv = argv
        self.log_path = (
            Path(log_path)
            if log_path is not None
            else Path(index).with_name(f"ocsp-responder-{os.getpid()}-{id(self):x}.log")
        )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C in pytest spares it
        )
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.close()
            raise

    @classmethod
    def for_pki(cls, pki: PKI, **kw: object) -> OCSPResponder:
        """A responder for ``pki``: its index, CA, delegated responder key, on ``pki.ocsp_port``."""
        kw.setdefault("port", pki.ocsp_port)
        kw.setdefault("ndays", 1)
        return cls(
            index=pki.index_path,
            ca=pki.ca.cert_path,
            rsigner=pki.responder.cert_path,
            rkey=pki.responder.key_path,
            **kw,  # type: ignore[arg-type]
        )

    def _wait_ready(self, timeout: float) -> None:
        """Wait for openssl's ``ACCEPT [::]:<port> PID=<pid>`` line (its bind succeeded)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            match = re.search(r"^ACCEPT \S*:(\d+)\b", text, re.MULTILINE)
            if match:
                self.port = int(match.group(1))
                return
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"openssl ocsp exited with {self.proc.returncode} before accepting:\n{text}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"openssl ocsp did not start within {timeout} s:\n{text}")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/``."""
        return f"http://127.0.0.1:{self.port}/"

    def log(self) -> str:
        """What the responder has printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Kill the responder (by PID) and reap it; safe to call twice."""
        proc, self.proc = getattr(self, "proc", None), None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            if "-multi" in self.argv:  # forked workers share the session we created for it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def __enter__(self) -> OCSPResponder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; tests use close()/with
        with contextlib.suppress(Exception):
            self.close()


@contextlib.contextmanager
def running_responder(pki: PKI, **kw: object) -> Iterator[OCSPResponder]:
    """``with running_responder(pki) as r:`` — :meth:`OCSPResponder.for_pki` as a context."""
    responder = OCSPResponder.for_pki(pki, **kw)
    try:
        yield responder
    finally:
        responder.close()
