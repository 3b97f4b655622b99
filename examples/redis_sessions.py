"""A TLS session store in Redis, shared by two server processes.

Needs a Redis server and ``pip install redis`` (or ``aiotls[examples]``). Start a
throwaway Redis and run the demo (two server processes and a client)::

    redis-server --port 0 --unixsocket /tmp/aiotls-redis.sock --save '' --appendonly no &
    python examples/redis_sessions.py --redis unix:///tmp/aiotls-redis.sock

Or run one server process yourself::

    python examples/redis_sessions.py --redis redis://127.0.0.1:6379/0 serve \\
        --key server.key --cert server.pem --port 8443

Each server stores every new session in Redis from ``on_new_session`` (an
``async`` hook: the handshake's last flight waits until the store has it) and
answers ``on_resume_session`` from Redis, so a client resumes its session on any
server process or host that shares the store and the certificate. Entries expire
with the session (``session_timeout``). The store serves TLS 1.2 session ids;
TLS 1.3 resumes through tickets, which servers share with ``ticket_keys``
(``examples/ticket_keys.py``). A store that fails or is slow costs a full
handshake, never a refused client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from OpenSSL import SSL

import aiotls
from aiotls import pki

HOST = "127.0.0.1"
SERVERNAME = "localhost"
PREFIX = b"aiotls:session:"


class RedisSessionStore:
    """``on_new_session`` and ``on_resume_session`` backed by Redis, with expiry."""

    def __init__(self, client: redis.Redis, ttl: int, name: str) -> None:
        self.client = client
        self.ttl = ttl
        self.name = name

    async def save(self, session_id: bytes, session: bytes) -> None:
        """``on_new_session``: store the session for ``ttl`` seconds."""
        await self.client.set(PREFIX + session_id, session, ex=self.ttl)
        print(f"[{self.name}] stored session {session_id.hex()[:16]}... in Redis", flush=True)

    async def load(self, session_id: bytes) -> bytes | None:
        """``on_resume_session``: the stored session, or None (a full handshake)."""
        session: bytes | None = await self.client.get(PREFIX + session_id)
        found = "found" if session else "not found"
        print(f"[{self.name}] session {session_id.hex()[:16]}... {found} in Redis", flush=True)
        return session


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until the client leaves."""
    with contextlib.suppress(aiotls.TLSError, ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def serve(args: argparse.Namespace) -> None:
    """One server process: serve until terminated."""
    client = redis.from_url(args.redis)
    store = RedisSessionStore(client, args.ttl, args.name)
    server = await aiotls.start_server(
        echo, args.host, args.port,
        key=Path(args.key).read_bytes(), cert=Path(args.cert).read_bytes(),
        # Session ids instead of tickets, so that every resumption asks the store.
        secure_options=SSL.OP_NO_TICKET, session_timeout=args.ttl,
        on_new_session=store.save, on_resume_session=store.load,
    )  # fmt: skip
    async with server, client:
        print(f"listening on {args.host}:{server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()


async def spawn(name: str, args: argparse.Namespace, key: Path, cert: Path) -> tuple[Any, int]:
    """Start a server process (this file, ``serve``); returns it and its port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--redis", args.redis, "--ttl", str(args.ttl),
        "serve", "--name", name,
        "--key", str(key), "--cert", str(cert), "--port", "0",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    line = await expect(proc)
    if not line.startswith("listening on "):
        raise RuntimeError(f"server {name} did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


async def expect(proc: Any) -> str:
    """The next line a server process printed (within 10 seconds)."""
    line: bytes = await asyncio.wait_for(proc.stdout.readline(), 10)
    return line.decode().strip()


async def connect(port: int, ca_pem: bytes, session: bytes | None) -> tuple[bool, bytes | None]:
    """A TLS 1.2 echo; whether the session was resumed, and the session to reuse."""
    reader, writer = await aiotls.open_connection(
        HOST, port, ca=ca_pem, servername=SERVERNAME, max_version="TLSv1.2", session=session
    )
    writer.write(b"ping")
    await reader.readexactly(4)
    tls = writer.get_extra_info("tls")
    resumed, latest = tls.session_reused, tls.get_session()
    writer.close()
    await writer.wait_closed()
    return resumed, latest


async def demo(args: argparse.Namespace) -> None:
    """Two server processes, one Redis: a session made on A resumes on B."""
    ca = pki.make_ca("aiotls Redis sessions example CA")
    key_pem, cert_pem = ca.issue([SERVERNAME])
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = Path(tmp, "server.key"), Path(tmp, "server.pem")
        key.write_bytes(key_pem)
        os.chmod(key, 0o600)
        cert.write_bytes(cert_pem)
        procs = []
        try:
            for name in ("A", "B"):
                procs.append(await spawn(name, args, key, cert))
            (a, port_a), (b, port_b) = procs
            print(f"server processes A (pid {a.pid}) and B (pid {b.pid}) share {args.redis}")
            resumed, session = await connect(port_a, ca.cert_pem, None)
            print(f"client -> A: full handshake (resumed={resumed})")
            print(await expect(a))
            resumed, _ = await connect(port_b, ca.cert_pem, session)
            print(await expect(b))
            print(f"client -> B with A's session: resumed={resumed}")
        finally:
            for proc, _ in procs:
                proc.terminate()
                await proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--redis",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis URL (redis://, rediss:// or unix://; default: $REDIS_URL or local)",
    )
    parser.add_argument("--ttl", type=int, default=300, help="session lifetime, seconds")
    commands = parser.add_subparsers(dest="command")
    serve_parser = commands.add_parser("serve", help="run one server process")
    serve_parser.add_argument("--name", default="server", help="label for the log lines")
    serve_parser.add_argument("--key", required=True, help="PEM private key file")
    serve_parser.add_argument("--cert", required=True, help="PEM certificate chain file")
    serve_parser.add_argument("--host", default=HOST)
    serve_parser.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(arguments) if arguments.command == "serve" else demo(arguments))
