"""``aiotls connect``, ``aiotls serve`` and ``aiotls cert``, end to end against real peers.

Every command runs as a subprocess (``python -m aiotls ...``), the way a user runs it.
The certificates come from ``aiotls cert`` itself, so every test also checks that its
files load into openssl, node and aiotls. Async tests run the CLI on the same kind of
loop as the test (``--loop asyncio`` or ``--loop uvloop``), so both loops are covered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from peers import HOST, PeerProcess, held_port, random_payload, require, run_peer, sha256

import aiotls
from aiotls import pki
from aiotls._cli_connect import _target

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = Path(__file__).parent / "node"
TIMEOUT = 30
AIOTLS = (sys.executable, "-m", "aiotls")
LISTENING = r"^listening on 127\.0\.0\.1:(\d+)$"


def cert_cmd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``aiotls cert ...`` to completion (it runs no event loop)."""
    return subprocess.run(
        [*AIOTLS, "cert", *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )


def cli(command: str, *args: str) -> tuple[str, ...]:
    """argv of ``aiotls COMMAND ... --loop <the running test's loop>``."""
    loop = "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"
    return (*AIOTLS, command, "--loop", loop, *args)


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate (localhost, 127.0.0.1, ::1) and a client one (alice)."""
    out = tmp_path_factory.mktemp("cli-pki") / "pki"
    for args in (
        ["ca", "--out", str(out)],
        ["leaf", "localhost", "127.0.0.1", "::1", "--ca", str(out), "--out", str(out)],
        ["client", "alice", "--ca", str(out), "--out", str(out)],
    ):
        proc = cert_cmd(*args)
        assert proc.returncode == 0, proc.stderr
    return out


def files(pki_dir: Path, *names: str) -> list[str]:
    return [str(pki_dir / name) for name in names]


# -- aiotls cert ---------------------------------------------------------------------


def test_cert_files_and_permissions(pki_dir: Path, tmp_path: Path) -> None:
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in pki_dir.iterdir()}
    assert modes == {
        "ca.pem": 0o644, "ca.key": 0o600, "server.pem": 0o644, "server.key": 0o600,
        "client.pem": 0o644, "client.key": 0o600,
    }  # fmt: skip
    assert stat.S_IMODE(pki_dir.stat().st_mode) == 0o700

    # Never replaced silently: exit 1, the old file intact; --force replaces it.
    before = (pki_dir / "ca.key").read_bytes()
    proc = cert_cmd("ca", "--out", str(pki_dir))
    assert proc.returncode == 1
    assert "not replacing" in proc.stderr and "--force" in proc.stderr
    assert (pki_dir / "ca.key").read_bytes() == before
    copy = tmp_path / "copy"
    shutil.copytree(pki_dir, copy)
    (copy / "ca.key").chmod(0o644)
    proc = cert_cmd("ca", "--out", str(copy), "--force", "--key-type", "rsa")
    assert proc.returncode == 0, proc.stderr
    assert (copy / "ca.key").read_bytes() != before
    assert stat.S_IMODE((copy / "ca.key").stat().st_mode) == 0o600

    # A CA directory without a CA is a usage error.
    proc = cert_cmd("leaf", "localhost", "--ca", str(tmp_path / "nothing"), "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "ca.pem" in proc.stderr


def test_cert_files_satisfy_openssl(pki_dir: Path, tmp_path: Path) -> None:
    openssl = require("openssl")

    def ok(*args: str) -> str:
        proc = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout + proc.stderr

    ca, server, client = files(pki_dir, "ca.pem", "server.pem", "client.pem")
    ok("verify", "-purpose", "sslserver", "-CAfile", ca, server)
    ok("verify", "-purpose", "sslclient", "-CAfile", ca, client)
    assert "IP Address:127.0.0.1" in ok("x509", "-in", server, "-noout", "-ext", "subjectAltName")
    assert "CN = alice" in ok("x509", "-in", client, "-noout", "-subject")

    proc = cert_cmd("csr", "www.example.test", "10.0.0.1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((tmp_path / "request.key").stat().st_mode) == 0o600
    text = ok("req", "-in", str(tmp_path / "request.csr"), "-verify", "-noout", "-text")
    assert "DNS:www.example.test, IP Address:10.0.0.1" in text
    assert "CN = www.example.test" in text

    bundle = tmp_path / "server.p12"
    proc = cert_cmd(
        "p12", "--cert", str(pki_dir / "server.pem"), "--key", str(pki_dir / "server.key"),
        "--ca", ca, "--out", str(bundle), "--passphrase", "s3cret",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    subjects = ok("pkcs12", "-in", str(bundle), "-passin", "pass:s3cret", "-nokeys")
    assert "subject=CN = localhost" in subjects and "aiotls local CA" in subjects
    proc = subprocess.run(
        [openssl, "pkcs12", "-in", str(bundle), "-passin", "pass:wrong", "-nokeys"],
        capture_output=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert proc.returncode != 0


def test_cert_files_load_into_aiotls(pki_dir: Path, tmp_path: Path) -> None:
    key, cert, ca = ((pki_dir / n).read_bytes() for n in ("server.key", "server.pem", "ca.pem"))
    server = aiotls.create_secure_context(key=key, cert=cert, ca=ca, request_cert=True)
    assert server.certificates[0].subject.rfc4514_string() == "CN=localhost"
    aiotls.create_secure_context(
        key=(pki_dir / "client.key").read_bytes(), cert=(pki_dir / "client.pem").read_bytes()
    )
    bundle = tmp_path / "b.p12"
    assert cert_cmd(
        "p12", "--cert", str(pki_dir / "server.pem"), "--key", str(pki_dir / "server.key"),
        "--out", str(bundle), "--passphrase", "pw",
    ).returncode == 0  # fmt: skip
    ctx = aiotls.create_secure_context(pfx=bundle.read_bytes(), passphrase="pw")
    assert ctx.certificates[0].subject.rfc4514_string() == "CN=localhost"
    with pytest.raises(aiotls.TLSError):
        aiotls.create_secure_context(pfx=bundle.read_bytes(), passphrase="nope")
    # The CA on disk is the one pki issues from.
    again = pki.load_ca(ca, (pki_dir / "ca.key").read_bytes())
    assert again.cert_pem == ca


def test_pki_refuses_mismatched_material() -> None:
    ca, other = pki.make_ca("one"), pki.make_ca("two")
    leaf_key, leaf_pem = ca.issue(["localhost"])
    with pytest.raises(ValueError, match="does not belong"):
        pki.load_ca(ca.cert_pem, other.key_pem)
    with pytest.raises(ValueError, match="not a CA"):
        pki.load_ca(leaf_pem, leaf_key)
    with pytest.raises(ValueError, match="does not belong"):
        pki.make_pkcs12(other.key_pem, leaf_pem, b"pw")
    with pytest.raises(ValueError, match="passphrase"):
        pki.make_pkcs12(leaf_key, leaf_pem, b"")
    with pytest.raises(ValueError):
        pki.make_csr([])


def test_readme_example_runs_on_cert_output(tmp_path: Path) -> None:
    """The README's server-and-client example, in a directory `aiotls cert` filled."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"## A server and a client\n.*?```python\n(.*?)```", readme, re.DOTALL)
    assert match is not None
    commands = re.search(r"```sh\n(aiotls cert ca\n.*?)```", readme, re.DOTALL)
    assert commands is not None, "the README shows the aiotls cert commands the example needs"
    for line in commands.group(1).splitlines():
        assert line.startswith("aiotls cert "), line
        assert cert_cmd(*line.split()[2:], cwd=tmp_path).returncode == 0
    script = tmp_path / "example.py"
    # The example's fixed port, in the test a port we hold: shared, so the script binds it.
    with held_port(shared=True) as port:
        script.write_text(match.group(1).replace("8443", str(port)))
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
            timeout=TIMEOUT,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"TLSv1\.3 TLS_\w+ localhost\nb'hello'\n", proc.stdout)


# -- aiotls serve --------------------------------------------------------------------


async def listening(server: PeerProcess) -> int:
    """The port from ``aiotls serve``'s first line of output."""
    (port,) = await server.wait_for_output(LISTENING)
    assert server.stdout.startswith(b"listening on "), str(server)
    return int(port)


async def test_serve_page_to_s_client(pki_dir: Path) -> None:
    openssl = require("openssl")
    ca, cert, key = files(pki_dir, "ca.pem", "server.pem", "server.key")
    serve = cli("serve", "--port", "0", "--cert", cert, "--key", key, "--alpn", "h2,http/1.1")
    async with run_peer(*serve) as server:
        port = await listening(server)
        async with run_peer(
            openssl, "s_client", "-connect", f"{HOST}:{port}", "-servername", "localhost",
            "-CAfile", ca, "-verify_return_error", "-alpn", "http/1.1", "-quiet",
        ) as client:  # fmt: skip
            await client.feed(b"GET / HTTP/1.0\r\n\r\n")
            assert await client.wait() == 0, str(client)  # the server closes after the page
        (line,) = await server.wait_for_output(r"^(127\.0\.0\.1:\d+: TLSv1\.3 .*)$")
    page = client.stdout.decode()
    head, _, body = page.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert "Content-Type: text/html" in head
    assert f"Content-Length: {len(body.encode())}" in head
    cells = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", body))
    assert cells["protocol"] == "TLSv1.3"
    assert cells["cipher"].startswith("TLS_")
    assert cells["ALPN"] == "http/1.1"
    assert cells["SNI"] == "localhost"
    assert cells["client certificate"] == "(none)"
    assert cells["request"] == "GET / HTTP/1.0"
    # s_client (OpenSSL 3.0) has no ML-KEM: a classical group, named on the page
    assert cells["key exchange"].split()[0] in line
    assert "ALPN=http/1.1 SNI=localhost client-cert=-" in line


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_serve_json_shows_client_certificate(pki_dir: Path, version: str) -> None:
    openssl = require("openssl")
    ca, cert, key, client_cert, client_key = files(
        pki_dir, "ca.pem", "server.pem", "server.key", "client.pem", "client.key"
    )
    serve = cli("serve", "--port", "0", "--cert", cert, "--key", key, "--ca", ca, "--request-cert")
    async with run_peer(*serve) as server:
        port = await listening(server)
        async with run_peer(
            openssl, "s_client", "-connect", f"{HOST}:{port}", "-servername", "localhost",
            "-CAfile", ca, "-verify_return_error", "-cert", client_cert, "-key", client_key,
            f"-tls{version.replace('.', '_')}", "-quiet",
        ) as client:  # fmt: skip
            await client.feed(b"GET /handshake.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert await client.wait() == 0, str(client)
    head, _, body = client.stdout.decode().partition("\r\n\r\n")
    assert "Content-Type: application/json" in head
    facts = json.loads(body)
    assert facts["protocol"] == f"TLSv{version}"
    assert facts["servername"] == "localhost"
    assert facts["client_certificate"]["subject"] == "CN=alice"
    assert facts["client_certificate"]["issuer"] == "O=aiotls local CA, CN=aiotls local CA"
    assert facts["client_authorized"] is True
    assert facts["client_authorization_error"] is None
    if version == "1.2":
        assert facts["cipher"].startswith("ECDHE-ECDSA-")
        assert facts["cipher_standard_name"].startswith("TLS_ECDHE_ECDSA_WITH_")


async def test_serve_require_cert_reports_refused_client(pki_dir: Path, tmp_path: Path) -> None:
    openssl = require("openssl")
    ca, cert, key = files(pki_dir, "ca.pem", "server.pem", "server.key")
    serve = cli("serve", "--port", "0", "--cert", cert, "--key", key, "--ca", ca, "--require-cert")
    # The request comes from a file: s_client may be refused and gone before a write to
    # its stdin pipe (a broken pipe under load); -quiet ignores the file's EOF.
    request = tmp_path / "request"
    request.write_bytes(b"GET / HTTP/1.0\r\n\r\n")
    async with run_peer(*serve) as server:
        port = await listening(server)
        with request.open("rb") as stdin:
            async with run_peer(
                openssl, "s_client", "-connect", f"{HOST}:{port}", "-CAfile", ca, "-quiet",
                stdin=stdin,
            ) as client:  # fmt: skip
                assert await client.wait() == 1, str(client)  # refused
        (line,) = await server.wait_for_output(
            r"^(aiotls serve: 127\.0\.0\.1:\d+: handshake failed: .*)$", stream="stderr"
        )
    assert b"HTTP/1.1" not in client.stdout
    assert line.endswith("]")  # Node's code in brackets


async def test_serve_echo_ephemeral_to_node(tmp_path: Path) -> None:
    node = require("node")
    ca_out = tmp_path / "ca.pem"
    nbytes = len(random_payload())
    async with run_peer(*cli("serve", "--port", "0", "--echo", "--ca-out", str(ca_out))) as server:
        port = await listening(server)
        await server.wait_for_output(rf"^ephemeral CA written to {re.escape(str(ca_out))}$")
        async with run_peer(
            node, str(NODE_DIR / "half_close_client.js"), str(port), str(ca_out), str(nbytes)
        ) as client:
            (line,) = await client.wait_for_output(r'^(\{"protocol".*\})$')
            assert await client.wait() == 0, str(client)
    report = json.loads(line)
    assert report["authorized"] is True
    assert report["protocol"] == "TLSv1.3"
    assert report["received"] == report["sent"]
    assert report["received"]["bytes"] == nbytes
    assert server.stderr == b"", str(server)


# -- aiotls connect ------------------------------------------------------------------


def report_rows(text: str) -> dict[str, str]:
    """The report table as {label: value} (labels are separated by 2+ spaces)."""
    rows = {}
    for line in text.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if line.startswith("  ") and len(parts) == 2:
            rows.setdefault(parts[0], parts[1])
    return rows


async def test_connect_to_s_server_pipes_both_ways(pki_dir: Path, tmp_path: Path) -> None:
    """OCSP staple, client certificate, ALPN and keylog against s_server; then data both
    ways, and EOF on stdin ends the session cleanly (exit 0)."""
    openssl = require("openssl")
    ca, cert, key, client_cert, client_key = files(
        pki_dir, "ca.pem", "server.pem", "server.key", "client.pem", "client.key"
    )
    issuer = pki.load_ca((pki_dir / "ca.pem").read_bytes(), (pki_dir / "ca.key").read_bytes())
    staple = tmp_path / "ocsp.der"
    staple.write_bytes(
        issuer.ocsp_response(x509.load_pem_x509_certificate(Path(cert).read_bytes()))
    )
    keylog = tmp_path / "keys.log"
    async with run_peer(
        openssl, "s_server", "-accept", f"{HOST}:0", "-naccept", "1", "-cert", cert,
        "-key", key, "-status_file", str(staple), "-Verify", "1", "-CAfile", ca,
        "-alpn", "http/1.1",
    ) as server:  # fmt: skip
        (port,) = await server.wait_for_output(r"^ACCEPT .*:(\d+)$")
        async with run_peer(*cli(
            "connect", f"127.0.0.1:{port}", "--servername", "localhost", "--ca", ca,
            "--cert", client_cert, "--key", client_key, "--ocsp", "--alpn", "h2,http/1.1",
            "--keylog", str(keylog),
        )) as client:  # fmt: skip
            await client.wait_for_output(r"^  verification", stream="stderr")
            await client.feed(b"hello from aiotls\n", close=False)
            await server.wait_for_output(r"^hello from aiotls$")
            await server.feed(b"hello from s_server\n", close=False)
            await client.wait_for_output(r"^hello from s_server$")
            assert client.proc.stdin is not None
            client.proc.stdin.close()  # EOF: close_notify; s_server answers and closes
            assert await client.wait() == 0, str(client)
        assert await server.wait() == 0, str(server)
    assert client.stdout == b"hello from s_server\n"  # only the server's bytes on stdout
    rows = report_rows(client.stderr.decode())
    assert rows["protocol"] == "TLSv1.3"
    assert rows["ALPN"] == "http/1.1"
    assert rows["SNI"] == "localhost"
    assert re.fullmatch(r"\d+ bytes, signed by the issuer, says good", rows["OCSP staple"])
    assert rows["verification"].startswith("OK")
    assert rows["chain 0 subject"] == "CN=localhost"
    assert rows["chain 1 subject"] == "O=aiotls local CA, CN=aiotls local CA"
    assert re.fullmatch(r"(?:[0-9A-F]{2}:){31}[0-9A-F]{2}", rows["SHA-256"])
    assert "subject=CN = alice" in server.stdout.decode() + server.stderr.decode()
    assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
    labels = {line.split()[0] for line in keylog.read_text().splitlines()}
    assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0"} <= labels


async def test_connect_verification_failures(pki_dir: Path) -> None:
    openssl = require("openssl")
    ca, cert, key = files(pki_dir, "ca.pem", "server.pem", "server.key")
    async with run_peer(
        openssl, "s_server", "-accept", f"{HOST}:0", "-cert", cert, "-key", key, "-no_tls1_2",
    ) as server:  # fmt: skip
        (port,) = await server.wait_for_output(r"^ACCEPT .*:(\d+)$")
        # A handshake that fails outright: no report, Node's code for OpenSSL's reason.
        async with run_peer(
            *cli("connect", f"localhost:{port}", "--ca", ca, "--tls-version", "1.2", "--json")
        ) as client:
            assert await client.wait() == 1, str(client)
        failure = json.loads(client.stdout)
        assert failure["ok"] is False
        assert failure["code"].startswith("ERR_SSL_"), failure
        assert f"[{failure['code']}]" in client.stderr.decode()

        cases = [
            ([f"127.0.0.1:{port}", "--servername", "wrong.test", "--ca", ca],
             "ERR_TLS_CERT_ALTNAME_INVALID", "Host: wrong.test. is not in the cert's altnames"),
            ([f"localhost:{port}"],  # the system store does not know our CA
             "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "trusting the system store"),
        ]  # fmt: skip
        for args, code, reason in cases:
            async with run_peer(*cli("connect", *args, "--json")) as client:
                assert await client.wait() == 1, str(client)
            report = json.loads(client.stdout)
            assert report["ok"] is False
            assert report["verification"]["code"] == code
            assert reason in report["verification"]["reason"]
            assert report["chain"][0]["subject"] == "CN=localhost"
            assert f"server not verified: {code}" in client.stderr.decode()

        # --insecure pipes anyway; the exit status still says "not verified"
        async with run_peer(*cli("connect", f"localhost:{port}", "--insecure")) as client:
            await client.feed(b"anyway\n")
            await server.wait_for_output(r"^anyway$")
            assert await client.wait() == 1, str(client)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_connect_session_out_and_in(pki_dir: Path, tmp_path: Path, version: str) -> None:
    openssl = require("openssl")
    ca, cert, key = files(pki_dir, "ca.pem", "server.pem", "server.key")
    session = tmp_path / "session.der"
    async with run_peer(
        openssl, "s_server", "-accept", f"{HOST}:0", "-cert", cert, "-key", key,
    ) as server:  # fmt: skip
        (port,) = await server.wait_for_output(r"^ACCEPT .*:(\d+)$")
        target = [f"localhost:{port}", "--ca", ca, "--tls-version", version, "--json"]
        async with run_peer(*cli("connect", *target, "--session-out", str(session))) as first:
            assert await first.wait() == 0, str(first)
        assert json.loads(first.stdout)["session_reused"] is False
        assert stat.S_IMODE(session.stat().st_mode) == 0o600
        async with run_peer(*cli("connect", *target, "--session-in", str(session))) as second:
            assert await second.wait() == 0, str(second)
    report = json.loads(second.stdout)
    assert report["session_reused"] is True
    assert report["protocol"] == f"TLSv{version}"
    assert report["verification"]["authorized"] is True


async def test_connect_to_node_server(pki_dir: Path) -> None:
    node = require("node")
    ca, cert, key = files(pki_dir, "ca.pem", "server.pem", "server.key")
    payload = random_payload(256 * 1024)
    async with run_peer(node, str(NODE_DIR / "echo_server.js"), key, cert, "TLSv1.3") as server:
        (port,) = await server.wait_for_output(r'^\{"port":(\d+)\}$')
        async with run_peer(*cli("connect", f"localhost:{port}", "--ca", ca)) as client:
            await client.feed(payload)  # then EOF: close_notify; node ends its side too
            assert await client.wait() == 0, str(client)
        (line,) = await server.wait_for_output(r'^(\{"protocol".*\})$')
        assert await server.wait() == 0, str(server)
    seen = json.loads(line)
    assert (seen["bytes"], seen["sha256"]) == (len(payload), sha256(payload))
    assert (len(client.stdout), sha256(client.stdout)) == (len(payload), sha256(payload))
    rows = report_rows(client.stderr.decode())
    assert rows["protocol"] == seen["protocol"] == "TLSv1.3"
    assert rows["cipher"] == seen["cipher"]["name"]
    assert rows["verification"].startswith("OK")


async def test_connect_failures_and_usage() -> None:
    with held_port() as port:  # nobody listens there
        async with run_peer(*cli("connect", f"127.0.0.1:{port}", "--json")) as client:
            assert await client.wait() == 1, str(client)
    assert json.loads(client.stdout)["code"] == "ECONNREFUSED"
    assert "[ECONNREFUSED]" in client.stderr.decode()
    for args, message in [
        (["127.0.0.1:99999"], "port 1-65535"),
        (["localhost", "--cert", os.devnull], "--cert and --key go together"),
        (["localhost", "--ciphers", "NO-SUCH-CIPHER"], "ciphers"),
        (["localhost", "--ca", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
    ]:
        async with run_peer(*cli("connect", *args)) as client:
            assert await client.wait() == 2, str(client)
        assert message in client.stderr.decode()


@pytest.mark.parametrize(
    ("text", "target"),
    [("example.com", ("example.com", 443)), ("example.com:8443", ("example.com", 8443)),
     ("127.0.0.1:1", ("127.0.0.1", 1)), ("[::1]:8443", ("::1", 8443)), ("[::1]", ("::1", 443)),
     ("::1", ("::1", 443)), ("fe80::1%eth0", ("fe80::1%eth0", 443))],
)  # fmt: skip
def test_connect_target(text: str, target: tuple[str, int]) -> None:
    assert _target(text) == target


@pytest.mark.parametrize("text", ["", ":443", "host:", "host:0", "host:65536", "[::1", "[::1]x"])
def test_connect_bad_target(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _target(text)


# -- help ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["connect"], ["serve"], ["cert"], ["cert", "ca"], ["cert", "leaf"], ["cert", "client"],
     ["cert", "csr"], ["cert", "p12"]],
)  # fmt: skip
def test_help_has_examples(command: list[str]) -> None:
    proc = subprocess.run(
        [*AIOTLS, *command, "--help"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    assert f"usage: aiotls {' '.join(command)}" in proc.stdout
    assert re.search(r"^examples?", proc.stdout, re.MULTILINE)
    assert "aiotls " + command[0] in proc.stdout.split("example", 1)[1]
