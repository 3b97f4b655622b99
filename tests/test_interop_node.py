"""Interop with Node.js's tls module, the spec aiotls follows.

tests/node/echo_server.js and tests/node/client.js report, as JSON, Node's
getProtocol() and getCipher() and a sha256 of the data they saw; aiotls must
report the very same protocol and cipher object for the same connection.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from peers import (
    PEER_TIMEOUT,
    VERSIONS,
    PeerProcess,
    aiotls_echo_server,
    aiotls_exchange,
    random_payload,
    require,
    run_peer,
    sha256,
    version_options,
)

NODE_DIR = Path(__file__).parent / "node"


async def node_report(peer: PeerProcess) -> dict[str, Any]:
    """The JSON line the script prints about its connection (it starts with "protocol")."""
    (line,) = await peer.wait_for_output(r'^(\{"protocol".*\})$')
    report: dict[str, Any] = json.loads(line)
    return report


@pytest.mark.parametrize("version", VERSIONS)
async def test_node_client_to_aiotls_server(
    version: str, server_key_pem: str, server_chain_pem: str, server_files: dict[str, str]
) -> None:
    node = require("node")
    nbytes = len(random_payload())  # node makes up its own random payload of this size
    async with (
        aiotls_echo_server(
            nbytes, key=server_key_pem, cert=server_chain_pem, **version_options(version)
        ) as (port, server_seen),
        run_peer(
            node, str(NODE_DIR / "client.js"), str(port), server_files["ca"], version, str(nbytes)
        ) as client,
    ):
        report = await node_report(client)
        assert await client.wait() == 0, str(client)
        server = await asyncio.wait_for(server_seen, PEER_TIMEOUT)

    assert report["authorized"] is True
    assert report["protocol"] == server.protocol == version
    assert report["cipher"] == server.cipher
    assert report["sent"] == report["received"] == {"bytes": nbytes, "sha256": server.sha256}
    assert server.nbytes == nbytes


@pytest.mark.parametrize("version", VERSIONS)
async def test_aiotls_client_to_node_server(
    version: str, ca_pem: str, server_files: dict[str, str]
) -> None:
    node = require("node")
    payload = random_payload()
    async with run_peer(
        node, str(NODE_DIR / "echo_server.js"), server_files["key"], server_files["cert"], version
    ) as server:
        (port,) = await server.wait_for_output(r'^\{"port":(\d+)\}$')
        client = await aiotls_exchange(
            int(port), payload, len(payload),
            ca=ca_pem, servername="localhost", **version_options(version),
        )  # fmt: skip
        report = await node_report(server)
        assert await server.wait() == 0, str(server)

    assert client.protocol == report["protocol"] == version
    assert client.cipher == report["cipher"]
    assert (report["bytes"], report["sha256"]) == (len(payload), sha256(payload))
    assert (client.nbytes, client.sha256) == (len(payload), sha256(payload))
