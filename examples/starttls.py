"""STARTTLS the SMTP way: a plaintext session upgraded to TLS in place with ``aiotls.start_tls``.

Run it (a small SMTP-like server and a client in one process, on a free loopback port)::

    python examples/starttls.py

Or run the server alone and talk to it with OpenSSL's SMTP STARTTLS client::

    python examples/starttls.py --serve --port 2525 --ca-out ca.pem
    openssl s_client -starttls smtp -crlf -connect 127.0.0.1:2525 -CAfile ca.pem \\
        -servername localhost

The server greets in plaintext and advertises STARTTLS in its EHLO reply; it
refuses mail until the session is encrypted. On ``STARTTLS`` it answers ``220``
and both sides call ``await aiotls.start_tls(writer, ...)``: the server with
``server_side=True`` and its context, the client with the CA to trust and the
name to verify. ``start_tls`` returns None and the same reader and writer carry
on, encrypted. As RFC 3207 requires, the client greets again (EHLO) and the
server forgets what it was told in plaintext; bytes a client pipelined after
``STARTTLS`` are taken as the start of TLS, never as commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import aiotls
from aiotls import pki

HOST = "127.0.0.1"
SERVERNAME = "localhost"
MAX_MESSAGE = 1 << 20  # bytes of DATA the server accepts per message


async def reply(writer: asyncio.StreamWriter, code: int, *lines: str) -> None:
    """An SMTP reply: ``code-line`` for all but the last line, ``code line`` for it."""
    for i, line in enumerate(lines):
        writer.write(f"{code}{'-' if i < len(lines) - 1 else ' '}{line}\r\n".encode())
    await writer.drain()


async def read_message(reader: asyncio.StreamReader) -> int:
    """Read DATA up to the lone ".", at most MAX_MESSAGE bytes; its size."""
    size = 0
    while (line := await reader.readline()) not in (b".\r\n", b".\n", b""):
        size += len(line)
        if size > MAX_MESSAGE:
            raise ValueError("message too large")
    return size


async def smtp_session(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: aiotls.SecureContext
) -> None:
    """One SMTP-like session: EHLO, STARTTLS, MAIL, RCPT, DATA, NOOP, QUIT."""
    encrypted = False
    await reply(writer, 220, f"{SERVERNAME} ESMTP aiotls example")
    while line := await reader.readline():
        verb, _, argument = line.decode("ascii", "replace").strip().partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            extensions = ["8BITMIME", "AUTH PLAIN"] if encrypted else ["8BITMIME", "STARTTLS"]
            await reply(writer, 250, f"{SERVERNAME} greets {argument or 'you'}", *extensions)
        elif verb == "STARTTLS" and not encrypted:
            await reply(writer, 220, "2.0.0 Ready to start TLS")
            await aiotls.start_tls(writer, server_side=True, context=context)
            encrypted = True
            print(f"server: upgraded to {writer.get_extra_info('tls').get_protocol()}")
        elif verb in ("MAIL", "RCPT", "DATA") and not encrypted:
            await reply(writer, 530, "5.7.0 Must issue a STARTTLS command first")
        elif verb in ("MAIL", "RCPT"):
            await reply(writer, 250, "2.1.0 OK")
        elif verb == "DATA":
            await reply(writer, 354, "End data with <CR><LF>.<CR><LF>")
            size = await read_message(reader)
            await reply(writer, 250, f"2.0.0 OK: queued {size} bytes, received over TLS")
        elif verb == "NOOP":
            await reply(writer, 250, "2.0.0 OK")
        elif verb == "QUIT":
            await reply(writer, 221, "2.0.0 Bye")
            break
        else:
            await reply(writer, 502, "5.5.2 Command not recognized")
    writer.close()
    with contextlib.suppress(aiotls.TLSError, ConnectionError):
        await writer.wait_closed()


async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str) -> str:
    """Send one command line; print and return the full reply."""
    writer.write(line.encode() + b"\r\n")
    return await read_reply(reader)


async def read_reply(reader: asyncio.StreamReader) -> str:
    """Read one (possibly multi-line) reply and print it."""
    lines = []
    while True:
        text = (await reader.readline()).decode().rstrip("\r\n")
        if not text:
            raise ConnectionError("the server closed the connection")
        lines.append(text)
        print(f"client <- {text}")
        if text[3:4] != "-":
            return "\n".join(lines)


async def client(port: int, ca_pem: bytes) -> None:
    """Greet, upgrade, greet again, send one message, quit."""
    reader, writer = await asyncio.open_connection(HOST, port)
    await read_reply(reader)
    assert "STARTTLS" in await command(reader, writer, "EHLO client.example.test")
    await command(reader, writer, "MAIL FROM:<alice@example.test>")  # refused: not encrypted
    assert (await command(reader, writer, "STARTTLS")).startswith("220")
    await aiotls.start_tls(writer, ca=ca_pem, servername=SERVERNAME)
    tls = writer.get_extra_info("tls")
    print(f"client: upgraded to {tls.get_protocol()}, server authorized: {tls.authorized}")
    await command(reader, writer, "EHLO client.example.test")  # RFC 3207: greet again
    await command(reader, writer, "MAIL FROM:<alice@example.test>")
    await command(reader, writer, "RCPT TO:<bob@example.test>")
    await command(reader, writer, "DATA")
    await command(reader, writer, "Subject: hello\r\n\r\nsecret over TLS\r\n.")
    await command(reader, writer, "QUIT")
    writer.close()
    await writer.wait_closed()


async def main(args: argparse.Namespace) -> None:
    """Run the server, and either one client against it (demo) or until interrupted."""
    ca = pki.make_ca("aiotls STARTTLS example CA")
    key, cert = ca.issue([SERVERNAME, HOST])
    context = aiotls.create_secure_context(key=key, cert=cert)
    server = await asyncio.start_server(  # plain TCP: TLS starts when the client asks
        lambda r, w: smtp_session(r, w, context), args.host, args.port
    )
    async with server:
        port = server.sockets[0].getsockname()[1]
        if not args.serve:
            await client(port, ca.cert_pem)
            return
        if args.ca_out:
            with open(args.ca_out, "wb") as f:
                f.write(ca.cert_pem)
        print(f"listening on {args.host}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="serve until interrupted")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ca-out", help="with --serve: write the ephemeral CA here")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
