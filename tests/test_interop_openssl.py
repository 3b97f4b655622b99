"""Interop with the openssl command line: s_client against aiotls, aiotls against s_server.

s_client (``-brief``) and s_server print the negotiated version and suite on
stderr as ``Protocol version: TLSv1.3`` / ``Ciphersuite: TLS_AES_256_GCM_SHA384``
(OpenSSL's names, which are aiotls's ``get_cipher()["name"]``).
"""

from __future__ import annotations

import asyncio

import pytest
from peers import (
    HOST,
    PEER_TIMEOUT,
    VERSIONS,
    PeerProcess,
    aiotls_echo_server,
    aiotls_exchange,
    hex_lines,
    random_payload,
    require,
    run_peer,
    sha256,
    version_options,
)

VERSION_FLAGS = {"TLSv1.2": "-tls1_2", "TLSv1.3": "-tls1_3"}


async def negotiated(peer: PeerProcess) -> tuple[str, str]:
    """The (protocol, cipher) an openssl s_client -brief or s_server reported."""
    (protocol,) = await peer.wait_for_output(r"^Protocol version: (\S+)$", stream="stderr")
    (cipher,) = await peer.wait_for_output(r"^Ciphersuite: (\S+)$", stream="stderr")
    return protocol, cipher


def reverse_lines(text: bytes) -> bytes:
    """What ``s_server -rev`` answers: every line reversed, newline kept at the end."""
    return b"".join(line[::-1] + b"\n" for line in text.splitlines())


@pytest.mark.parametrize("version", VERSIONS)
async def test_s_client_to_aiotls_server(
    version: str, server_key_pem: str, server_chain_pem: str, server_files: dict[str, str]
) -> None:
    openssl = require("openssl")
    payload = random_payload()
    server_options = version_options(version)
    async with (
        aiotls_echo_server(
            len(payload), key=server_key_pem, cert=server_chain_pem, **server_options
        ) as (port, server_seen),
        run_peer(
            openssl, "s_client", "-connect", f"{HOST}:{port}", VERSION_FLAGS[version],
            "-CAfile", server_files["ca"], "-servername", "localhost",
            "-verify_hostname", "localhost", "-verify_return_error",
            "-brief", "-ign_eof", "-nocommands",
        ) as client,
    ):  # fmt: skip
        await client.feed(payload)
        # The server closes after echoing everything; s_client then exits.
        assert await client.wait() == 0, str(client)
        server = await asyncio.wait_for(server_seen, PEER_TIMEOUT)
        client_protocol, client_cipher = await negotiated(client)

    assert client_protocol == server.protocol == version
    assert server.cipher is not None
    assert client_cipher == server.cipher["name"]
    assert server.cipher["version"] == version
    assert (server.nbytes, server.sha256) == (len(payload), sha256(payload))
    assert (len(client.stdout), sha256(client.stdout)) == (len(payload), sha256(payload))


@pytest.mark.parametrize("version", VERSIONS)
async def test_aiotls_client_to_s_server(
    version: str, ca_pem: str, server_files: dict[str, str]
) -> None:
    openssl = require("openssl")
    # s_server -rev answers each line reversed: send random bytes as lines of hex.
    text = hex_lines(random_payload())
    expected = reverse_lines(text)
    async with run_peer(
        openssl, "s_server", "-accept", f"{HOST}:0", "-naccept", "1", "-rev",
        "-key", server_files["key"], "-cert", server_files["cert"], VERSION_FLAGS[version],
    ) as server:  # fmt: skip
        (port,) = await server.wait_for_output(r"^ACCEPT .*:(\d+)$")
        client = await aiotls_exchange(
            int(port), text, len(expected),
            ca=ca_pem, servername="localhost", **version_options(version),
        )  # fmt: skip
        server_protocol, server_cipher = await negotiated(server)
        assert await server.wait() == 0, str(server)

    assert client.protocol == server_protocol == version
    assert client.cipher is not None
    assert client.cipher["name"] == server_cipher
    assert client.cipher["version"] == version
    assert (client.nbytes, client.sha256) == (len(expected), sha256(expected))
