"""Async SNI: a server that picks each client's certificate from a directory.

Run the demo (makes a directory of certificates, serves it, connects with several
names, adds a certificate while the server runs)::

    python examples/sni_directory.py

Or serve a real directory (``<name>.key`` + ``<name>.pem`` per host name, and
``*.example.com.key`` + ``*.example.com.pem`` for a wildcard)::

    python examples/sni_directory.py --cert-dir /etc/certs --key default.key \\
        --cert default.pem --port 8443

``sni_callback`` may be a coroutine function: the handshake waits while it reads
the files in a worker thread, and every other connection goes on. Contexts are
cached (the most recently used ``--max-cached``, and a file that changes is
loaded again), names that are not plain host names never reach the filesystem,
and a name without a certificate gets the default one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import re
import tempfile
from pathlib import Path

import aiotls
from aiotls import pki

HOST = "127.0.0.1"
# A host name made of letters, digits and hyphens: no "/", "..", or anything else a
# client could use to point outside the directory.
HOSTNAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


class CertDirectory:
    """An async ``sni_callback``: SecureContexts loaded on demand from a directory."""

    def __init__(self, directory: Path, max_cached: int = 256) -> None:
        self.directory = directory
        self.max_cached = max_cached
        # file name -> (modification time, context); least recently used first
        self._cache: collections.OrderedDict[str, tuple[int, aiotls.SecureContext]] = (
            collections.OrderedDict()
        )

    async def __call__(self, servername: str | None) -> aiotls.SecureContext | None:
        """The context for ``servername`` (exact name, then wildcard); None: the default."""
        name = (servername or "").lower().rstrip(".")
        if not HOSTNAME.fullmatch(name):
            return None
        candidates = [name]
        if "." in name:
            candidates.append("*." + name.split(".", 1)[1])
        for stem in candidates:
            if context := await self._context(stem):
                return context
        return None

    async def _context(self, stem: str) -> aiotls.SecureContext | None:
        """The cached context for ``stem``, or one read afresh (file I/O in a worker thread)."""
        key_path, cert_path = self.directory / f"{stem}.key", self.directory / f"{stem}.pem"
        try:
            stamp = await asyncio.to_thread(
                lambda: max(key_path.stat().st_mtime_ns, cert_path.stat().st_mtime_ns)
            )
        except FileNotFoundError:
            return None
        cached = self._cache.get(stem)
        if cached is None or cached[0] != stamp:
            context = await asyncio.to_thread(
                lambda: aiotls.create_secure_context(
                    key=key_path.read_bytes(), cert=cert_path.read_bytes()
                )
            )
            cached = self._cache[stem] = (stamp, context)
        self._cache.move_to_end(stem)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return cached[1]


def write_identity(directory: Path, stem: str, ca: pki.CA, *names: str) -> None:
    """Issue a certificate for ``names`` and store it as ``<stem>.key`` / ``<stem>.pem``."""
    key, cert = ca.issue(names)
    (directory / f"{stem}.key").write_bytes(key)
    (directory / f"{stem}.pem").write_bytes(cert)


async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Tell the client which name it asked for, then close."""
    writer.write(f"hello, {writer.get_extra_info('tls').servername}\n".encode())
    await writer.drain()
    writer.close()


async def visit(port: int, ca_pem: bytes, servername: str) -> None:
    """Connect with ``servername`` as SNI and report the certificate the server chose."""
    try:
        reader, writer = await aiotls.open_connection(HOST, port, ca=ca_pem, servername=servername)
    except aiotls.TLSError as exc:  # the default certificate does not cover this name
        print(f"{servername:<22} refused: {exc.code}")
        return
    tls = writer.get_extra_info("tls")
    san = tls.get_peer_certificate()["subjectaltname"]
    print(f"{servername:<22} got {san}: {(await reader.readline()).decode().strip()}")
    writer.close()
    with contextlib.suppress(aiotls.TLSError, ConnectionError):
        await writer.wait_closed()


async def demo() -> None:
    """Serve a fresh certificate directory and connect with a few names."""
    ca = pki.make_ca("aiotls SNI example CA")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_identity(directory, "a.example.test", ca, "a.example.test")
        write_identity(directory, "b.example.test", ca, "b.example.test")
        write_identity(directory, "*.apps.example.test", ca, "*.apps.example.test")
        default_key, default_cert = ca.issue(["localhost"])
        server = await aiotls.start_server(
            greet, HOST, 0, key=default_key, cert=default_cert,
            sni_callback=CertDirectory(directory),
        )  # fmt: skip
        async with server:
            port = server.sockets[0].getsockname()[1]
            for name in ("a.example.test", "b.example.test", "shop.apps.example.test",
                         "localhost", "unknown.example.test"):  # fmt: skip
                await visit(port, ca.cert_pem, name)
            write_identity(directory, "c.example.test", ca, "c.example.test")
            print("(added c.example.test while serving)")
            await visit(port, ca.cert_pem, "c.example.test")


async def serve(args: argparse.Namespace) -> None:
    """Serve ``--cert-dir`` until interrupted."""
    server = await aiotls.start_server(
        greet,
        args.host,
        args.port,
        key=Path(args.key).read_bytes(),
        cert=Path(args.cert).read_bytes(),
        sni_callback=CertDirectory(Path(args.cert_dir), args.max_cached),
    )
    async with server:
        print(f"listening on {args.host}:{server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cert-dir", help="serve this directory (default: run the demo)")
    parser.add_argument("--key", help="the default certificate's key (with --cert-dir)")
    parser.add_argument("--cert", help="the default certificate chain (with --cert-dir)")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--max-cached", type=int, default=256, help="contexts kept in memory")
    arguments = parser.parse_args()
    if arguments.cert_dir and not (arguments.key and arguments.cert):
        parser.error("--cert-dir needs --key and --cert (the default certificate)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(arguments) if arguments.cert_dir else demo())
