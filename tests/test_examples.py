"""Every runnable example in examples/, run as a user runs it: a subprocess, to completion.

Each example without arguments is a demo that starts its own servers and clients on
127.0.0.1 and exits 0; the lines it prints are the story it tells, checked here. The
echo and aiohttp pairs need two processes (tested beside their features); the Redis
example gets a throwaway ``redis-server`` on a unix socket, started and stopped here;
the STARTTLS server is also driven by ``openssl s_client -starttls smtp``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from peers import HOST, require

import aiotls

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 60
#: Examples that need more than ``python examples/NAME`` (tested by their own tests: the
#: aiohttp pair by tests/test_aiohttp_peers.py::test_examples_run_app_and_tlsconnector).
NOT_DEMOS = {
    "echo_server.py", "echo_client.py", "redis_sessions.py",
    "aiohttp_server.py", "aiohttp_client.py",
}  # fmt: skip

#: Lines (regular expressions, matched whole) each demo must print, in any order.
EXPECTED: dict[str, list[str]] = {
    "sansio_engine.py": [
        r"server: TLSv1\.3 with SNI 'localhost'",
        r"client: TLSv1\.3, TLS_\w+, verified localhost",
        r"client <- HELLO FROM A PLAIN SOCKET",
        r"client: closed cleanly: True",
    ],
    "sni_directory.py": [
        r"a\.example\.test +got DNS:a\.example\.test: hello, a\.example\.test",
        r"b\.example\.test +got DNS:b\.example\.test: hello, b\.example\.test",
        r"shop\.apps\.example\.test +got DNS:\*\.apps\.example\.test: hello, shop\..*",
        r"localhost +got DNS:localhost: hello, localhost",
        r"unknown\.example\.test +refused: ERR_TLS_CERT_ALTNAME_INVALID",
        r"c\.example\.test +got DNS:c\.example\.test: hello, c\.example\.test",
    ],
    "ocsp_stapling.py": [
        r"good server, client 1: staple says good; echoed ping",
        r"good server, client 2: staple says good; echoed ping",
        r"revoked server, client 1: refused: the CA says the certificate is revoked",
        r"revoked server, client 2: refused: the CA says the certificate is revoked",
        r"OCSP responder asked 2 times for 4 handshakes",
    ],
    "mtls_crl.py": [
        r"anonymous \(no certificate\): refused \(.*\)",
        r"  server: refused: ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE",
        r"mallory: refused \(.*REVOKED\)",
        r"eve \(another CA\): refused \(.*UNKNOWN_CA\)",
        r"  server: refused: UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
        r"alice: hello, alice",
        r"  server: accepted alice",
        r"alice: refused \(.*REVOKED\)",
        r"  server: refused: CERT_REVOKED",
        r"bob: hello, bob",
        r"alice's open connection: still here\?",
    ],
    "ticket_keys.py": [
        r"server A: full handshake, ticket of \d+ bytes",
        r"server B with A's ticket: resumed=True",
        r"keys rotated on both servers \(\d+x\)",
        r"server A with the old ticket: resumed=False \(a new ticket was issued\)",
        r"server B with the new ticket: resumed=True",
    ],
    "starttls.py": [
        r"client <- 250 STARTTLS",
        r"client <- 530 5\.7\.0 Must issue a STARTTLS command first",
        r"client <- 220 2\.0\.0 Ready to start TLS",
        r"client: upgraded to TLSv1\.3, server authorized: True",
        r"server: upgraded to TLSv1\.3",
        r"client <- 250 AUTH PLAIN",
        r"client <- 250 2\.0\.0 OK: queued \d+ bytes, received over TLS",
        r"client <- 221 2\.0\.0 Bye",
    ],
}
NEEDS = {"ticket_keys.py": "ticket_keys"}


def run_example(name: str, *args: str) -> str:
    """Run ``python examples/NAME ARGS`` to completion; its stdout (it must exit 0, quietly)."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    assert proc.stderr == "", proc.stderr  # no tracebacks, warnings or logged errors
    return proc.stdout


def assert_lines(stdout: str, patterns: list[str]) -> None:
    lines = stdout.splitlines()
    for pattern in patterns:
        assert any(re.fullmatch(pattern, line) for line in lines), f"{pattern!r} in:\n{stdout}"


def lines_of(proc: subprocess.Popen[str], until: str) -> list[str]:
    """Lines of ``proc``'s stdout up to the first matching ``until`` (pytest-timeout bounds it)."""
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if re.search(until, line):
            return seen
    raise AssertionError(f"{proc.args[0]} exited before {until!r}: {''.join(seen)}")


def test_every_example_is_covered() -> None:
    """A new example gets checked lines here (or at least runs below, via the glob)."""
    names = {path.name for path in EXAMPLES.glob("*.py")}
    assert names >= set(EXPECTED) | NOT_DEMOS


@pytest.mark.parametrize(
    "name", sorted(p.name for p in EXAMPLES.glob("*.py") if p.name not in NOT_DEMOS)
)
def test_example_demo(name: str) -> None:
    if name in NEEDS and not aiotls.features()[NEEDS[name]]:
        pytest.skip(f"{NEEDS[name]} needs extended OpenSSL access")
    assert_lines(run_example(name), EXPECTED.get(name, []))


def test_example_redis_sessions(tmp_path: Path) -> None:
    """Two server processes share a throwaway Redis: a session made on A resumes on B."""
    if not aiotls.features()["resume_session"]:
        pytest.skip("on_resume_session needs extended OpenSSL access")
    pytest.importorskip("redis")
    socket_path = tmp_path / "redis.sock"
    redis = subprocess.Popen(
        [require("redis-server"), "--port", "0", "--unixsocket", str(socket_path),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines_of(redis, r"(?i)ready to accept connections")
        stdout = run_example("redis_sessions.py", "--redis", f"unix://{socket_path}")
    finally:
        redis.kill()
        redis.communicate()
    assert_lines(stdout, [
        r"server processes A \(pid \d+\) and B \(pid \d+\) share unix://.*",
        r"client -> A: full handshake \(resumed=False\)",
        r"\[A\] stored session [0-9a-f]{16}\.\.\. in Redis",
        r"\[B\] session [0-9a-f]{16}\.\.\. found in Redis",
        r"client -> B with A's session: resumed=True",
    ])  # fmt: skip
    stored = re.search(r"\[A\] stored session (\w+)", stdout)
    found = re.search(r"\[B\] session (\w+)", stdout)
    assert stored and found and stored.group(1) == found.group(1)


def test_example_starttls_with_openssl_s_client(tmp_path: Path) -> None:
    """OpenSSL's own SMTP STARTTLS client upgrades, verifies and talks to the example."""
    openssl = require("openssl")
    ca_file = tmp_path / "ca.pem"
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "starttls.py"), "--serve", "--ca-out", str(ca_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        (listening,) = lines_of(server, r"^listening on ")
        port = listening.strip().rsplit(":", 1)[1]
        client = subprocess.run(
            [openssl, "s_client", "-starttls", "smtp", "-crlf", "-ign_eof",
             "-connect", f"{HOST}:{port}", "-CAfile", str(ca_file), "-servername", "localhost"],
            input="EHLO peer.example.test\nMAIL FROM:<a@example.test>\nQUIT\n",
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
    finally:
        server.kill()
        server.communicate()
    assert "Verify return code: 0 (ok)" in client.stdout, client.stdout + client.stderr
    assert_lines(client.stdout, [
        r"250-localhost greets peer\.example\.test",
        r"250 AUTH PLAIN",  # offered only once encrypted
        r"250 2\.1\.0 OK",
        r"221 2\.0\.0 Bye",
    ])  # fmt: skip
