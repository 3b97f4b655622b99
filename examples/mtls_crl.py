"""Mutual TLS with a CRL: clients prove who they are; revoked certificates are refused.

Run it (a server and its clients in one process, on a free loopback port)::

    python examples/mtls_crl.py

The server asks every client for a certificate (``request_cert=True``), accepts
only those its CA issued (``ca=``, ``reject_unauthorized=True``) and checks them
against the CA's revocation list (``crl=``). Then it revokes one more client
while running: ``Server.set_secure_context`` swaps in a context with the new CRL
for the connections that follow, and the connection already open goes on. Each
connection attempt ends in exactly one server event, ``on_secure_connection``
(accepted, with the client's name) or ``on_tls_client_error`` (refused, with
OpenSSL's verdict such as ``CERT_REVOKED``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from cryptography import x509

import aiotls
from aiotls import pki

HOST = "127.0.0.1"
SERVERNAME = "localhost"


def client_name(tls: Any) -> str:
    """The common name of the client's certificate (``tls``: a transport or its TLS view)."""
    return str(tls.get_peer_certificate()["subject"]["CN"])


async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Greet the client by the name in its certificate, echo lines until it leaves."""
    writer.write(f"hello, {client_name(writer.get_extra_info('tls'))}\n".encode())
    with contextlib.suppress(aiotls.TLSError, ConnectionError):
        async for line in reader:
            writer.write(line)
    writer.close()


async def attempt(port: int, ca: pki.CA, label: str, identity: dict[str, Any]) -> Any:
    """Connect as ``label``; print the greeting or the refusal. The open streams, or None."""
    try:
        reader, writer = await aiotls.open_connection(
            HOST, port, ca=ca.cert_pem, servername=SERVERNAME, **identity
        )
        # TLS 1.3: the server judges the client's certificate after the client's side
        # of the handshake is done, so a refusal arrives as an alert on the first read.
        greeting = await reader.readline()
        if not greeting:
            raise ConnectionError("the server closed the connection")
    except (aiotls.TLSError, ConnectionError) as exc:
        print(f"{label}: refused ({getattr(exc, 'code', None) or exc})")
        return None
    print(f"{label}: {greeting.decode().strip()}")
    return reader, writer


async def close(writer: asyncio.StreamWriter) -> None:
    """Close with close_notify; the server may already have gone."""
    writer.close()
    with contextlib.suppress(aiotls.TLSError, ConnectionError):
        await writer.wait_closed()


async def main() -> None:
    """Four clients, a revocation at run time, and what the server saw of each."""
    ca = pki.make_ca("aiotls mTLS example CA")
    key, cert = ca.issue([SERVERNAME])
    clients: dict[str, dict[str, Any]] = {"anonymous (no certificate)": {}}
    for name in ("alice", "bob", "mallory"):
        client_key, client_cert = ca.issue([f"{name}.clients.example.test"], common_name=name)
        clients[name] = {"key": client_key, "cert": client_cert}
    stranger_key, stranger_cert = pki.make_ca("another CA").issue(["eve"], common_name="eve")
    clients["eve (another CA)"] = {"key": stranger_key, "cert": stranger_cert}

    def certificate(name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate(clients[name]["cert"])

    server_options: dict[str, Any] = {
        "key": key, "cert": cert, "ca": ca.cert_pem, "crl": ca.crl([certificate("mallory")]),
        "request_cert": True, "reject_unauthorized": True,
    }  # fmt: skip
    events: asyncio.Queue[str] = asyncio.Queue()
    server = await aiotls.start_server(
        greet, HOST, 0, **server_options,
        on_secure_connection=lambda t: events.put_nowait(f"accepted {client_name(t)}"),
        on_tls_client_error=lambda exc, t: events.put_nowait(f"refused: {exc.code}"),
    )  # fmt: skip
    async with server:
        port = server.sockets[0].getsockname()[1]

        async def visit(label: str, keep_open: bool = False) -> Any:
            streams = await attempt(port, ca, label, clients[label])
            print(f"  server: {await asyncio.wait_for(events.get(), 10)}")
            if streams is not None and not keep_open:
                await close(streams[1])
            return streams

        for label in ("anonymous (no certificate)", "mallory", "eve (another CA)"):
            await visit(label)
        reader, writer = await visit("alice", keep_open=True)
        print("revoking alice: a new CRL for new connections")
        server.set_secure_context(
            {**server_options, "crl": ca.crl([certificate("mallory"), certificate("alice")])}
        )
        await visit("alice")
        await visit("bob")
        writer.write(b"still here?\n")
        print(f"alice's open connection: {(await reader.readline()).decode().strip()}")
        await close(writer)


if __name__ == "__main__":
    asyncio.run(main())
