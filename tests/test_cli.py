"""The ``aiotls`` command line, the in-memory PKI and the runnable examples, end to end.

The CLI and examples run in subprocesses (``python -m aiotls ...``) exactly as a
user would run them, with this checkout first on ``PYTHONPATH``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from aiotls import cli, pki
from aiotls.demo import describe_group

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 30
FINGERPRINT = re.compile(r"^(?:[0-9A-F]{2}:){31}[0-9A-F]{2}$")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` to completion, with the checkout importable."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def table(stdout: str) -> dict[str, str]:
    """The demo's aligned table as {label: value} (labels are separated by 2+ spaces)."""
    rows = {}
    for line in stdout.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if line.startswith("  ") and len(parts) == 2:
            rows[parts[0]] = parts[1]
    return rows


# -- aiotls demo ---------------------------------------------------------------------


def test_demo_table() -> None:
    proc = run("-m", "aiotls", "demo")
    assert proc.returncode == 0, proc.stderr
    rows = table(proc.stdout)
    assert rows["protocol"] == "TLSv1.3"
    assert rows["cipher"].startswith("TLS_")  # TLS 1.3 suite names are the IANA names
    group = rows["key exchange"].split()[0]
    assert re.fullmatch(r"[A-Za-z0-9_]+", group)
    assert describe_group(group)[0] in rows["key exchange"]
    assert rows["ALPN"].startswith("http/1.1")
    assert rows["SNI"] == "localhost (server saw localhost)"
    assert rows["peer subject"] == "CN=localhost"
    assert "aiotls demo CA" in rows["peer issuer"]
    assert FINGERPRINT.match(rows["peer SHA-256"])
    assert rows["authorized"].startswith("yes")
    assert re.fullmatch(r"\d+ bytes sent and received back intact", rows["echo"])
    assert re.match(r"\d+\.\d ms", rows["handshake"])
    assert rows["cert by SNI"].endswith("DNS:api.example.test")
    assert rows["OCSP staple"].endswith("says good")
    assert rows["resumed"].startswith("yes") and rows["shared store"].startswith("yes")
    assert proc.stderr == ""
    # aligned: every value starts in the same column
    starts = {line.index(rows[label], len(label)) for line in proc.stdout.splitlines()
              for label in rows if line.startswith(f"  {label} ")}  # fmt: skip
    assert len(starts) == 1


def _check_json(data: dict[str, Any], version: str) -> None:
    assert data["ok"] is True
    assert data["protocol"] == version
    assert data["address"] == "127.0.0.1"
    assert 0 < data["port"] < 65536
    assert data["alpn"] == "http/1.1"
    assert data["servername"] == data["server_saw_servername"] == "localhost"
    assert data["peer_subject"] == "CN=localhost"
    assert FINGERPRINT.match(data["peer_fingerprint256"])
    assert data["authorized"] is True
    assert data["bytes_echoed"] > 0
    assert 0 < data["handshake_ms"] < TIMEOUT * 1000
    assert isinstance(data["group"], str) and data["group"]
    assert (data["group_description"], data["post_quantum"]) == describe_group(data["group"])
    if "MLKEM" in data["group"].upper():
        assert data["post_quantum"] is True
        assert "post-quantum" in data["group_description"]


def test_demo_json() -> None:
    proc = run("-m", "aiotls", "demo", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    _check_json(data, "TLSv1.3")
    assert data["cipher"] == data["cipher_standard_name"]
    assert data["cipher"].startswith("TLS_")


def test_demo_tls12() -> None:
    proc = run("-m", "aiotls", "demo", "--tls-version", "1.2", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    _check_json(data, "TLSv1.2")
    # an ECDSA certificate: ECDHE-ECDSA suites, which have distinct IANA names
    assert data["cipher"].startswith("ECDHE-ECDSA-")
    assert data["cipher_standard_name"].startswith("TLS_ECDHE_ECDSA_WITH_")
    assert data["post_quantum"] is False  # TLS 1.2 has no hybrid key exchange

    proc = run("-m", "aiotls", "demo", "--tls-version", "1.2")
    assert proc.returncode == 0, proc.stderr
    rows = table(proc.stdout)
    assert rows["protocol"] == "TLSv1.2"
    assert "(TLS_ECDHE_ECDSA_WITH_" in rows["cipher"]


def test_demo_tls13_pinned() -> None:
    data = json.loads(run("-m", "aiotls", "demo", "--tls-version", "1.3", "--json").stdout)
    _check_json(data, "TLSv1.3")


def test_demo_failure_is_reported() -> None:
    proc = run("-m", "aiotls", "demo", "--json", "--timeout", "0.0001")
    assert proc.returncode == 1
    assert "aiotls demo: failed: timed out" in proc.stderr
    assert json.loads(proc.stdout) == {"ok": False, "error": "timed out after 0.0001 s"}


@pytest.mark.parametrize(
    "args", [[], ["demo", "--tls-version", "1.1"], ["nosuchcommand"], ["demo", "--bogus"]]
)
def test_usage_errors(args: list[str]) -> None:
    proc = run("-m", "aiotls", *args)
    assert proc.returncode == 2
    assert "usage: aiotls" in proc.stderr


def test_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--json"]) == 0
    _check_json(json.loads(capsys.readouterr().out), "TLSv1.3")
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("aiotls ")


@pytest.mark.parametrize(
    ("group", "post_quantum", "text"),
    [
        ("X25519MLKEM768", True, "post-quantum hybrid: X25519 + ML-KEM-768"),
        ("SecP256r1MLKEM768", True, "post-quantum hybrid: SecP256r1 + ML-KEM-768"),
        ("MLKEM1024", True, "post-quantum: ML-KEM-1024"),
        ("x25519", False, "classical elliptic-curve Diffie-Hellman"),
        ("ffdhe2048", False, "classical finite-field Diffie-Hellman"),
        (None, False, "unknown"),
    ],
)
def test_describe_group(group: str | None, post_quantum: bool, text: str) -> None:
    assert describe_group(group) == (text, post_quantum)


# -- aiotls.pki ----------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_pki_issue(key_type: pki.KeyType) -> None:
    ca = pki.make_ca("test CA")
    key_pem, chain_pem = ca.issue(["localhost", "127.0.0.1", "::1"], key_type=key_type)
    [leaf] = x509.load_pem_x509_certificates(chain_pem)  # the root is not sent
    root = x509.load_pem_x509_certificate(ca.cert_pem)
    private = serialization.load_pem_private_key(key_pem, None)
    expected = ec.EllipticCurvePrivateKey if key_type == "ecdsa" else rsa.RSAPrivateKey
    assert isinstance(private, expected)
    assert private.public_key() == leaf.public_key()

    leaf.verify_directly_issued_by(root)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest

    root_bc = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert root_bc.ca
    assert root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    now = datetime.datetime.now(datetime.UTC)
    assert leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc
    assert leaf.not_valid_after_utc - now <= datetime.timedelta(days=2)


def test_pki_rejects_bad_input() -> None:
    ca = pki.make_ca()
    with pytest.raises(ValueError):
        ca.issue([])
    with pytest.raises(ValueError):
        ca.issue(["localhost"], key_type="dsa")  # type: ignore[arg-type]


# -- examples ------------------------------------------------------------------------


def test_example_docstrings() -> None:
    for path in EXAMPLES.glob("*.py"):
        source = path.read_text()
        assert source.startswith('"""'), path
        assert f"python examples/{path.name}" in source, path


def test_example_echo(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "echo_server.py"), "--port", "0", "--once",
         "--ca-out", str(ca_file)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        deadline, lines = time.monotonic() + TIMEOUT, list[str]()
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            assert line, f"server exited early: {''.join(lines)}"
            lines.append(line)
            if match := re.match(r"listening on 127\.0\.0\.1:(\d+)", line):
                port = match.group(1)
                break
        else:
            pytest.fail("the server did not start listening")
        assert ca_file.exists()

        client = run(str(EXAMPLES / "echo_client.py"), "--port", port, "--ca", str(ca_file),
                     "hello", "second line", cwd=tmp_path)  # fmt: skip
        assert client.returncode == 0, client.stderr
        first, *echoes = client.stdout.splitlines()
        assert re.fullmatch(r"connected: TLSv1\.3, TLS_\w+, verified localhost", first)
        assert echoes == ["echo: hello", "echo: second line"]

        out, _ = server.communicate(timeout=TIMEOUT)  # --once: exits after the client
        assert server.returncode == 0, out
        assert re.search(r"connected, TLSv1\.3\n.*closed\n", out)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_example_echo_client_refuses_wrong_ca(tmp_path: Path) -> None:
    other_ca = tmp_path / "other.pem"
    other_ca.write_bytes(pki.make_ca("someone else").cert_pem)
    ca_file = tmp_path / "ca.pem"
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "echo_server.py"), "--port", "0", "--once",
         "--ca-out", str(ca_file)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        port = ""
        for line in server.stdout:
            if match := re.match(r"listening on 127\.0\.0\.1:(\d+)", line):
                port = match.group(1)
                break
        assert port
        client = run(str(EXAMPLES / "echo_client.py"), "--port", port, "--ca", str(other_ca))
        assert client.returncode == 1
        assert client.stderr.startswith("echo_client: ")
        assert "certificate" in client.stderr
    finally:
        server.kill()
        server.wait()


def test_demo_fingerprint_fallback() -> None:
    """Without Node's certificate object the demo computes subject and fingerprint itself."""
    from types import SimpleNamespace

    from cryptography.hazmat.primitives import hashes

    from aiotls.demo import _peer_identity

    ca = pki.make_ca("fallback CA")
    cert = x509.load_pem_x509_certificate(ca.issue(["localhost"])[1])

    def broken() -> dict[str, Any]:
        raise RuntimeError("certinfo unavailable")

    for getter in (broken, dict):  # raising, or Node's {} (no certificate details)
        tls = SimpleNamespace(
            get_peer_certificate=getter,
            engine=SimpleNamespace(get_peer_x509_certificate=lambda: cert),
        )
        subject, issuer, fingerprint = _peer_identity(tls)
        assert subject == "CN=localhost"
        assert issuer == "O=fallback CA, CN=fallback CA"  # as from Node's object
        assert fingerprint == cert.fingerprint(hashes.SHA256()).hex(":").upper()
        assert FINGERPRINT.match(fingerprint)
