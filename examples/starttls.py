"""STARTTLS: a plaintext line protocol upgraded to TLS in place with ``aiotls.start_tls``.

Run it (server and client in one process, on a free loopback port)::

    python examples/starttls.py

The client greets in plaintext, sends ``STARTTLS``; the server answers
``READY`` and both sides call ``await aiotls.start_tls(writer, ...)``: the server
with ``server_side=True`` and its context, the client with the CA to trust and the
name to verify. ``start_tls`` returns None and the same reader and writer carry on,
now encrypted, exactly as SMTP, IMAP or LDAP upgrade a connection.
"""

from __future__ import annotations

import asyncio

import aiotls
from aiotls import pki


async def main() -> None:
    """Run one plaintext-then-TLS conversation and print both sides of it."""
    ca = pki.make_ca("aiotls STARTTLS example CA")
    key, cert = ca.issue(["localhost"])
    server_context = aiotls.create_secure_context(key=key, cert=cert)
    finished = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 plaintext greeting; say STARTTLS\r\n")
        assert await reader.readline() == b"STARTTLS\r\n"
        writer.write(b"READY\r\n")
        await aiotls.start_tls(writer, server_side=True, context=server_context)
        tls = writer.get_extra_info("tls")
        print(f"server: upgraded to {tls.get_protocol()}")
        line = await reader.readline()  # the same reader, now decrypting
        writer.write(b"encrypted echo: " + line)
        await writer.drain()
        await reader.read()  # until the client's close_notify
        writer.close()
        await writer.wait_closed()
        finished.set()

    # A plain TCP server: the TLS starts only when the protocol says so.
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        print("client <-", (await reader.readline()).decode().strip())
        writer.write(b"STARTTLS\r\n")
        assert await reader.readline() == b"READY\r\n"
        await aiotls.start_tls(writer, ca=ca.cert_pem, servername="localhost")
        tls = writer.get_extra_info("tls")
        print(f"client: upgraded to {tls.get_protocol()}, server authorized: {tls.authorized}")
        writer.write(b"secret over TLS\r\n")
        print("client <-", (await reader.readline()).decode().strip())
        writer.close()
        await writer.wait_closed()
        await finished.wait()


if __name__ == "__main__":
    asyncio.run(main())
