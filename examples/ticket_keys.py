"""Session ticket keys shared by two servers, and rotated while they run.

Run it (two servers and a client in one process, on free loopback ports)::

    python examples/ticket_keys.py

A session ticket is the server's own state, encrypted under its ticket keys and
kept by the client. Servers that share the keys (``ticket_keys=`` when the
context is made, ``Server.set_ticket_keys()`` later; 80 bytes in OpenSSL's
layout) resume each other's sessions, so a client behind a load balancer
resumes wherever it lands. Keys should change often (a stolen key decrypts every
session made under it): :class:`KeyRotator` hands fresh random keys to every
server at a fixed interval. OpenSSL keeps one key set per context, so a ticket
issued before a rotation gets a full handshake, and a new ticket, afterwards.
Works on TLS 1.3 and TLS 1.2 alike.
"""

from __future__ import annotations

import asyncio
import os
import sys

import aiotls
from aiotls import pki

HOST = "127.0.0.1"
SERVERNAME = "localhost"


class KeyRotator:
    """Give every server the same fresh 80-byte ticket keys, every ``interval`` seconds."""

    def __init__(self, servers: list[aiotls.Server], interval: float) -> None:
        self.servers = servers
        self.interval = interval
        self.rotations = 0
        self.rotated = asyncio.Event()

    def rotate(self) -> None:
        """Install new keys on all servers now (in production: fetched from a shared
        secret store, so that every host rotates to the same keys)."""
        keys = os.urandom(80)
        for server in self.servers:
            server.set_ticket_keys(keys)
        self.rotations += 1
        self.rotated.set()

    async def run(self) -> None:
        """Rotate forever (run it as a task; cancel it to stop)."""
        while True:
            await asyncio.sleep(self.interval)
            self.rotate()


async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one line, then close."""
    await reader.readline()
    writer.write(b"hello\n")
    await writer.drain()
    writer.close()


async def visit(port: int, ca_pem: bytes, session: bytes | None) -> tuple[bool, bytes | None]:
    """One exchange; whether the session was resumed, and the newest session to reuse."""
    reader, writer = await aiotls.open_connection(
        HOST, port, ca=ca_pem, servername=SERVERNAME, session=session
    )
    writer.write(b"hi\n")
    await reader.readline()  # TLS 1.3 tickets arrive with (or before) the first reply
    tls = writer.get_extra_info("tls")
    resumed, latest = tls.session_reused, tls.get_session()
    writer.close()
    await writer.wait_closed()
    return resumed, latest


async def main() -> None:
    """A ticket from server A resumes on server B; after a rotation it no longer does."""
    ca = pki.make_ca("aiotls ticket keys example CA")
    key, cert = ca.issue([SERVERNAME])
    shared_keys = os.urandom(80)
    a = await aiotls.start_server(hello, HOST, 0, key=key, cert=cert, ticket_keys=shared_keys)
    b = await aiotls.start_server(hello, HOST, 0, key=key, cert=cert, ticket_keys=shared_keys)
    port_a, port_b = (s.sockets[0].getsockname()[1] for s in (a, b))
    rotator = KeyRotator([a, b], interval=0.2)
    async with a, b:
        _, ticket = await visit(port_a, ca.cert_pem, None)
        print(f"server A: full handshake, ticket of {len(ticket or b'')} bytes")
        resumed, _ = await visit(port_b, ca.cert_pem, ticket)
        print(f"server B with A's ticket: resumed={resumed}")
        rotation = asyncio.create_task(rotator.run())
        try:
            await asyncio.wait_for(rotator.rotated.wait(), 10)
        finally:
            rotation.cancel()
        print(f"keys rotated on both servers ({rotator.rotations}x)")
        resumed, ticket = await visit(port_a, ca.cert_pem, ticket)
        print(f"server A with the old ticket: resumed={resumed} (a new ticket was issued)")
        resumed, _ = await visit(port_b, ca.cert_pem, ticket)
        print(f"server B with the new ticket: resumed={resumed}")


if __name__ == "__main__":
    if not aiotls.features()["ticket_keys"]:
        sys.exit("ticket_keys: this build has no extended OpenSSL access (see README)")
    asyncio.run(main())
