"""The sans-I/O engine: ``aiotls.TLSEngine`` over plain blocking sockets, no asyncio.

Run it (a server thread and a client in one process, on a free loopback port)::

    python examples/sansio_engine.py

TLSEngine does TLS and nothing else: bytes from the network go in with
``receive_data()``, bytes for the network come out of ``data_to_send()``,
plaintext goes in with ``send()`` and comes out of ``read()``. Who moves the
bytes is up to you: here two blocking sockets and a thread; the same loop fits
``selectors``, trio, a serial line or a test harness. The client engine judges
the server itself with Node's rules (chain, host name, DH size), exactly as the
asyncio transports do: a refused server makes ``receive_data()`` raise
``TLSCertificateError`` (with ``reject_unauthorized=False`` it goes on and reports
``authorized`` / ``authorization_error`` instead).
"""

from __future__ import annotations

import socket
import threading

import aiotls
from aiotls import pki

_print_lock = threading.Lock()


def say(line: str) -> None:
    """Print one whole line: the server thread and the client print concurrently."""
    with _print_lock:
        print(line, flush=True)

HOST = "127.0.0.1"
SERVERNAME = "localhost"
CHUNK = 65536


def flush(engine: aiotls.TLSEngine, sock: socket.socket) -> None:
    """Send whatever ciphertext the engine has queued."""
    if data := engine.data_to_send():
        sock.sendall(data)


def handshake(engine: aiotls.TLSEngine, sock: socket.socket) -> None:
    """Pump bytes between the socket and the engine until the handshake completes.

    A client's first flush sends its ClientHello (queued when the engine was made).
    """
    status = engine.status
    while True:
        flush(engine, sock)
        if status.handshake_complete:
            return
        data = sock.recv(CHUNK)
        if not data:
            raise ConnectionError("the peer closed during the handshake")
        status = engine.receive_data(data)  # raises if the peer is refused


def receive(engine: aiotls.TLSEngine, sock: socket.socket) -> bytes:
    """The next plaintext from the peer; b"" once its close_notify (or EOF) arrived."""
    while not (plaintext := engine.read()):
        if engine.close_notify_received:
            return b""
        data = sock.recv(CHUNK)
        if not data:
            return b""
        engine.receive_data(data)
        flush(engine, sock)  # TLS 1.3 tickets, key updates, our close_notify answer
    return plaintext


def serve_one(listener: socket.socket, context: aiotls.SecureContext) -> None:
    """Accept one client and echo what it sends, upper-cased, until it closes."""
    sock, _ = listener.accept()
    with sock:
        engine = aiotls.TLSEngine(context, server_side=True)
        handshake(engine, sock)
        say(f"server: {engine.get_protocol()} with SNI {engine.servername!r}")
        while data := receive(engine, sock):
            engine.send(data.upper())
            flush(engine, sock)
        engine.close()  # answer the client's close_notify with ours
        flush(engine, sock)


def client(port: int, ca_pem: bytes) -> None:
    """Connect, verify the server, exchange one message and close cleanly."""
    context = aiotls.create_secure_context(ca=ca_pem)
    engine = aiotls.TLSEngine(context, server_hostname=SERVERNAME)
    with socket.create_connection((HOST, port)) as sock:
        handshake(engine, sock)
        # reject_unauthorized (the default): the handshake raised unless it was authorized
        verdict = f"verified {SERVERNAME}" if engine.authorized else engine.authorization_error
        cipher = engine.get_cipher() or {}
        say(f"client: {engine.get_protocol()}, {cipher.get('name')}, {verdict}")
        engine.send(b"hello from a plain socket")
        flush(engine, sock)
        say(f"client <- {receive(engine, sock).decode()}")
        engine.close()
        flush(engine, sock)
        receive(engine, sock)  # until the server's close_notify
        say(f"client: closed cleanly: {engine.close_notify_received}")


def main() -> None:
    """Run the server thread and the client against each other once."""
    ca = pki.make_ca("aiotls sans-I/O example CA")
    key, cert = ca.issue([SERVERNAME])
    server_context = aiotls.create_secure_context(key=key, cert=cert)
    with socket.create_server((HOST, 0)) as listener:
        server = threading.Thread(target=serve_one, args=(listener, server_context), daemon=True)
        server.start()
        try:
            client(listener.getsockname()[1], ca.cert_pem)
        finally:
            server.join(timeout=10)


if __name__ == "__main__":
    main()
