"""OCSP stapling: the server fetches and caches its OCSP response, the client checks it.

Run it (an OCSP responder, two servers and a client in one process, on loopback)::

    python examples/ocsp_stapling.py

The server's ``on_ocsp_request(cert, issuer)`` is a coroutine: on the first
handshake that asks for status it POSTs a request to the OCSP responder with
``aiotls.ocsp.fetch`` (the handshake waits, other connections go on), verifies the
answer with ``aiotls.ocsp.verify`` and keeps it until half its validity has passed,
so later handshakes staple it without a round trip. The client asks with
``request_ocsp=True``, receives the staple in ``on_ocsp_response`` and refuses a
server whose certificate the CA says is revoked. The responder here is a small
HTTP server in the same process that signs answers with the example's CA (a real
deployment uses the URL in the certificate's Authority Information Access).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime

from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp

import aiotls
from aiotls import ocsp, pki

HOST = "127.0.0.1"
SERVERNAME = "localhost"
MAX_REQUEST = 16384  # bytes of HTTP request the responder accepts


class Responder:
    """A minimal HTTP OCSP responder for one CA: ``good`` unless a serial is revoked."""

    def __init__(self, ca: pki.CA) -> None:
        self.ca = ca
        self.issued: dict[int, x509.Certificate] = {}
        self.revoked: set[int] = set()
        self.requests = 0

    def issue(self, *names: str) -> tuple[bytes, bytes]:
        """A key and a chain (leaf + CA, so the server knows the issuer) for ``names``."""
        key, leaf = self.ca.issue(names)
        cert = x509.load_pem_x509_certificate(leaf)
        self.issued[cert.serial_number] = cert
        return key, leaf + self.ca.cert_pem

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one ``POST`` of a DER OCSP request."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if length > MAX_REQUEST:
                raise ValueError("request too large")
            request = x509_ocsp.load_der_ocsp_request(await reader.readexactly(length))
            self.requests += 1
            cert = self.issued[request.serial_number]
            body = self.ca.ocsp_response(cert, revoked=cert.serial_number in self.revoked)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        finally:
            writer.close()


class StapleCache:
    """An async ``on_ocsp_request``: a verified response, fetched once per half-life."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._staple: tuple[bytes, datetime.datetime] | None = None

    async def __call__(self, cert: x509.Certificate, issuer: x509.Certificate | None) -> bytes:
        now = datetime.datetime.now(datetime.UTC)
        if self._staple is not None and now < self._staple[1]:
            return self._staple[0]
        if issuer is None:
            raise ValueError("the issuer is unknown: put the CA in the chain or in ca=")
        response = await ocsp.fetch(cert, issuer, url=self.url, timeout=5)
        status = ocsp.verify(response, cert, issuer)  # never staple what does not verify
        next_update = status.next_update or now + datetime.timedelta(hours=1)
        self._staple = (response, status.this_update + (next_update - status.this_update) / 2)
        return response


async def echo_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo one line, then close."""
    with contextlib.suppress(aiotls.TLSError, ConnectionError):
        writer.write(await reader.readline())
        await writer.drain()
    writer.close()


async def connect(port: int, ca: pki.CA) -> str:
    """Connect asking for status; the verdict on the stapled response."""
    staples: list[bytes | None] = []
    reader, writer = await aiotls.open_connection(
        HOST, port, ca=ca.cert_pem, servername=SERVERNAME,
        request_ocsp=True, on_ocsp_response=staples.append,
    )  # fmt: skip
    try:
        tls = writer.get_extra_info("tls")
        if not staples or staples[0] is None:
            return "no staple"
        status = ocsp.verify(staples[0], tls.get_peer_x509_certificate(), ca.cert)
        if status.status != "good":
            return f"refused: the CA says the certificate is {status.status}"
        writer.write(b"ping\n")
        return f"staple says good; echoed {(await reader.readline()).strip().decode()}"
    finally:
        writer.close()
        with contextlib.suppress(aiotls.TLSError, ConnectionError):
            await writer.wait_closed()


async def main() -> None:
    """One server with a good certificate, one with a revoked one; two clients each."""
    ca = pki.make_ca("aiotls OCSP example CA")
    responder = Responder(ca)
    http = await asyncio.start_server(responder.handle, HOST, 0)
    async with http:
        url = f"http://{HOST}:{http.sockets[0].getsockname()[1]}/"
        good_key, good_chain = responder.issue(SERVERNAME)
        bad_key, bad_chain = responder.issue(SERVERNAME)
        responder.revoked.add(x509.load_pem_x509_certificate(bad_chain).serial_number)
        for label, key, chain in (("good", good_key, good_chain), ("revoked", bad_key, bad_chain)):
            server = await aiotls.start_server(
                echo_line, HOST, 0, key=key, cert=chain, on_ocsp_request=StapleCache(url)
            )
            async with server:
                port = server.sockets[0].getsockname()[1]
                for attempt in (1, 2):
                    print(f"{label} server, client {attempt}: {await connect(port, ca)}")
        print(f"OCSP responder asked {responder.requests} times for 4 handshakes")


if __name__ == "__main__":
    asyncio.run(main())
