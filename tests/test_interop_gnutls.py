"""Interop with GnuTLS, a TLS stack that shares no code with OpenSSL.

gnutls-cli and gnutls-serv describe each session in one line, e.g.
``- Description: (TLS1.3-X.509)-(ECDHE-SECP256R1)-(ECDSA-SECP256R1-SHA256)-(AES-256-GCM)``:
the version comes first, the bulk cipher last. (.ci/install-peers.sh installs them.)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from peers import (
    HOST,
    PAYLOAD_SIZE,
    PEER_TIMEOUT,
    VERSIONS,
    PeerProcess,
    Seen,
    aiotls_echo_server,
    aiotls_exchange,
    hex_lines,
    listening_port,
    random_payload,
    require,
    run_peer,
    sha256,
    version_options,
)

DESCRIPTION = re.compile(r"^- Description: (.*)$", re.MULTILINE)
#: gnutls-cli writes what it receives to stdout one byte per write(2): 1 MiB takes
#: seconds, so the gnutls-cli test moves a quarter of the usual payload.
GNUTLS_CLI_PAYLOAD = PAYLOAD_SIZE // 4


def priority(version: str) -> str:
    """A GnuTLS priority string allowing exactly ``version`` ("TLSv1.3" -> VERS-TLS1.3)."""
    return f"NORMAL:-VERS-ALL:+VERS-{version.replace('v', '')}"


def parse_description(output: str) -> tuple[str, str]:
    """(protocol in Node's spelling, bulk cipher) from GnuTLS's session description."""
    match = DESCRIPTION.search(output)
    assert match is not None, f"no session description in:\n{output}"
    parts = re.findall(r"\(([^)]*)\)", match.group(1))
    gnutls_version = parts[0].split("-")[0]  # "TLS1.3"
    return gnutls_version.replace("TLS", "TLSv"), parts[-1]


def assert_same_suite(aiotls_seen: Seen, gnutls_cipher: str) -> None:
    """GnuTLS names the bulk cipher ("AES-256-GCM"); it must be in aiotls's IANA name."""
    assert aiotls_seen.cipher is not None
    assert gnutls_cipher.replace("-", "_") in aiotls_seen.cipher["standardName"], (
        gnutls_cipher,
        aiotls_seen.cipher,
    )


@contextlib.asynccontextmanager
async def gnutls_echo_server(
    version: str, server_files: dict[str, str]
) -> AsyncIterator[tuple[PeerProcess, int]]:
    """gnutls-serv --echo on an ephemeral port: ``-p 0`` binds one but prints "port 0",
    so the port is read from the listening socket of the process we started."""
    gnutls_serv = require("gnutls-serv")
    async with run_peer(
        gnutls_serv, "--echo", "-p", "0", "--priority", priority(version),
        "--x509keyfile", server_files["key"], "--x509certfile", server_files["cert"],
    ) as server:  # fmt: skip
        # "done" comes after listen(2); gnutls-serv listens on 0.0.0.0 (and on ::).
        await server.wait_for_output(
            r"^(Echo Server listening on IPv4 \S+ port 0\.\.\.done)$", stream="stderr"
        )
        yield server, listening_port(server.proc.pid)


@pytest.mark.parametrize("version", VERSIONS)
async def test_gnutls_cli_to_aiotls_server(
    version: str,
    server_key_pem: str,
    server_chain_pem: str,
    server_files: dict[str, str],
    tmp_path: Path,
) -> None:
    gnutls_cli = require("gnutls-cli")
    payload = random_payload(GNUTLS_CLI_PAYLOAD)
    log = tmp_path / "gnutls-cli.log"  # its session report; stdout carries only the data
    async with (
        aiotls_echo_server(
            len(payload), key=server_key_pem, cert=server_chain_pem, **version_options(version)
        ) as (port, server_seen),
        run_peer(
            gnutls_cli, "--x509cafile", server_files["ca"], "-p", str(port),
            "--sni-hostname", "localhost", "--verify-hostname", "localhost",
            "--priority", priority(version), "--logfile", str(log), HOST,
        ) as client,
    ):  # fmt: skip
        # stdin stays open: gnutls-cli would end the session at its EOF, echo or not.
        # It exits when the server closes the connection after the echo.
        await client.feed(payload, close=False)
        assert await client.wait() == 0, str(client)
        server = await asyncio.wait_for(server_seen, PEER_TIMEOUT)

    client_protocol, client_cipher = parse_description(log.read_text())
    assert client_protocol == server.protocol == version
    assert_same_suite(server, client_cipher)
    assert (server.nbytes, server.sha256) == (len(payload), sha256(payload))
    assert (len(client.stdout), sha256(client.stdout)) == (len(payload), sha256(payload))


@pytest.mark.parametrize("version", VERSIONS)
async def test_aiotls_client_to_gnutls_serv(
    version: str, ca_pem: str, server_files: dict[str, str]
) -> None:
    # gnutls-serv --echo handles text (it is C-string based): send lines of hex.
    text = hex_lines(random_payload())
    async with gnutls_echo_server(version, server_files) as (server, port):
        client = await aiotls_exchange(
            port, text, len(text), ca=ca_pem, servername="localhost", **version_options(version)
        )
        # gnutls-serv serves forever; SIGTERM makes it exit(), flushing its stdout.
        await server.terminate()

    server_protocol, server_cipher = parse_description(server.stdout.decode())
    assert client.protocol == server_protocol == version
    assert_same_suite(client, server_cipher)
    assert (client.nbytes, client.sha256) == (len(text), sha256(text))
