"""Shared machinery of the interop tests (tests/test_interop_*.py).

- :func:`run_peer` starts a peer program (openssl, node, gnutls) whose output is
  collected in the background and which is killed by PID when the test ends.
- :func:`aiotls_echo_server` and :func:`aiotls_exchange` are aiotls's side: a
  server echoing one connection, a client sending a payload and reading the echo,
  each reporting what it saw as a :class:`Seen`.
- payload helpers: random bytes, their hex form as text lines, sha256.

Every wait is bounded by :data:`PEER_TIMEOUT`; every address is 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import aiotls

HOST = "127.0.0.1"
#: The versions every interop test runs with (Node's names, as aiotls reports them).
VERSIONS = ["TLSv1.2", "TLSv1.3"]
#: How much data each test pushes through the peer and back.
PAYLOAD_SIZE = 1 << 20
#: Upper bound of any single wait on a peer (start-up, output, exit), in seconds.
PEER_TIMEOUT = 8.0
_CHUNK = 64 * 1024


# -- payloads ------------------------------------------------------------------------


def random_payload(size: int = PAYLOAD_SIZE) -> bytes:
    return os.urandom(size)


def hex_lines(data: bytes, width: int = 4096) -> bytes:
    """``data`` as newline-terminated lines of hex, for peers that echo text only."""
    text = data.hex().encode()
    return b"".join(text[i : i + width] + b"\n" for i in range(0, len(text), width))


def sha256(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


# -- peer processes ------------------------------------------------------------------


def require(binary: str) -> str:
    """The path of ``binary``, or skip the test when it is not installed."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed")
    return path


@contextlib.contextmanager
def held_port(*, shared: bool = False) -> Iterator[int]:
    """A port on 127.0.0.1 bound, not listening, for the block: a connection to it is
    refused, and no ephemeral bind elsewhere takes it meanwhile.

    ``shared`` sets SO_REUSEADDR, so a server that sets it too (asyncio's create_server
    does) may bind and listen there: for programs that take a fixed port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        yield int(sock.getsockname()[1])


def listening_port(pid: int) -> int:
    """The IPv4 TCP port process ``pid`` listens on, from /proc (its socket inodes in the
    TCP table): for peers that bind port 0 but do not say which port they got."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)  # the header
        for row in table:
            local, state, inode = (row.split()[i] for i in (1, 3, 9))
            if state == "0A" and inode in inodes:  # 0A: TCP_LISTEN
                return int(local.rsplit(":", 1)[1], 16)
    raise AssertionError(f"process {pid} listens on no IPv4 TCP port")


class PeerProcess:
    """A running peer program; its stdout and stderr accumulate in :attr:`stdout`/:attr:`stderr`."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._output = asyncio.Event()
        assert proc.stdout is not None and proc.stderr is not None
        self._collectors = [
            asyncio.ensure_future(self._collect(proc.stdout, self.stdout)),
            asyncio.ensure_future(self._collect(proc.stderr, self.stderr)),
        ]

    async def _collect(self, stream: asyncio.StreamReader, into: bytearray) -> None:
        while chunk := await stream.read(_CHUNK):
            into += chunk
            self._output.set()
        self._output.set()  # EOF: wake waiters so they notice the output is final

    def __str__(self) -> str:
        def tail(buf: bytearray) -> str:
            return bytes(buf[-2000:]).decode("utf-8", "replace")

        return (
            f"{self.name} (pid {self.proc.pid}, exit {self.proc.returncode})\n"
            f"--- stdout (tail) ---\n{tail(self.stdout)}\n"
            f"--- stderr (tail) ---\n{tail(self.stderr)}"
        )

    async def wait_for_output(
        self, pattern: str, *, stream: str = "stdout", timeout: float = PEER_TIMEOUT
    ) -> tuple[str, ...]:
        """The groups of the first match of ``pattern`` (multiline) in ``stream``, once there."""
        regex = re.compile(pattern.encode(), re.MULTILINE)
        buf: bytearray = getattr(self, stream)
        try:
            async with asyncio.timeout(timeout):
                # Only whole lines: "$" must not match at the end of a line still arriving.
                while (match := regex.search(buf, 0, buf.rfind(b"\n") + 1)) is None:
                    if all(c.done() for c in self._collectors):
                        raise AssertionError(f"{pattern!r} never appeared on {stream} of {self}")
                    self._output.clear()
                    await self._output.wait()
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} on {stream} within {timeout}s: {self}") from None
        return tuple(group.decode("utf-8", "replace") for group in match.groups())

    async def feed(self, data: bytes, *, close: bool = True) -> None:
        """Write ``data`` to the peer's stdin (then close it, unless ``close=False``)."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            with contextlib.suppress(AssertionError):
                await self.wait(timeout=1.0)  # to show its last words below
            raise AssertionError(f"{self.name} stopped reading its stdin: {self}") from None
        if close:
            stdin.close()

    async def wait(self, timeout: float = PEER_TIMEOUT) -> int:
        """Wait for the peer to exit by itself and for all its output; its exit code."""
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
                await asyncio.gather(*self._collectors)
        except TimeoutError:
            raise AssertionError(f"{self.name} still running after {timeout}s: {self}") from None
        return code

    async def terminate(self, timeout: float = PEER_TIMEOUT) -> int:
        """SIGTERM (peers flush their stdio on it, unlike on SIGKILL), then wait."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    async def kill(self) -> None:
        """SIGKILL this peer (by its PID) if it still runs; reap it and its pipes."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PEER_TIMEOUT):
                await self.proc.wait()
        for collector in self._collectors:
            collector.cancel()
        await asyncio.gather(*self._collectors, return_exceptions=True)
        if self.proc.stdin is not None:
            self.proc.stdin.close()


@contextlib.asynccontextmanager
async def run_peer(*argv: str, **popen: Any) -> AsyncIterator[PeerProcess]:
    """Start ``argv`` with piped stdio; whatever happens, it is killed on the way out.

    ``popen`` goes to the subprocess as is: ``env``, ``pass_fds``, or a file as ``stdin``
    for input that must be there however early the peer reads it.
    """
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(
        *argv, **{"stdin": pipe, **popen, "stdout": pipe, "stderr": pipe}
    )
    peer = PeerProcess(proc, os.path.basename(argv[0]))
    try:
        yield peer
    finally:
        await peer.kill()


# -- nginx ---------------------------------------------------------------------------

_NGINX_CONF = """
daemon off;
# A single-process nginx (master_process off) crashes on an inherited socket (1.22).
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port}{listen};
{server}
    }}
}}
"""


def nginx_binary() -> str:
    """nginx lives in /usr/sbin, which a non-root PATH may lack."""
    path = shutil.which("nginx", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")
    if path is None:
        pytest.skip("nginx not installed (.ci/install-peers.sh installs nginx-light)")
    return path


@contextlib.asynccontextmanager
async def run_nginx(
    directory: Path, server: str, *, listen: str = ""
) -> AsyncIterator[tuple[PeerProcess, int]]:
    """nginx with one HTTP ``server`` block (its directives; ``listen`` adds parameters
    to its listen directive) on 127.0.0.1; yields the peer and its port.

    nginx cannot bind port 0, so the listening socket is ours: bound to an ephemeral
    port, then handed over the way nginx's binary upgrade does (the fd, named in the
    NGINX environment variable; the config's listen names the same address). Files go
    to ``directory``.
    """
    nginx = nginx_binary()
    with socket.create_server((HOST, 0)) as sock:
        port = sock.getsockname()[1]
        conf = directory / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(dir=directory, host=HOST, port=port, listen=listen, server=server)
        )
        argv = (nginx, "-p", str(directory), "-c", str(conf), "-e", "stderr")
        env = {**os.environ, "NGINX": f"{sock.fileno()};"}
        async with run_peer(*argv, env=env, pass_fds=(sock.fileno(),)) as peer:
            sock.close()  # nginx has it: should nginx die, connections are refused, not queued
            (worker,) = await peer.wait_for_output(r"start worker process (\d+)$", stream="stderr")
            try:
                yield peer, port
            finally:
                # SIGTERM to the master stops its worker too; SIGKILL would orphan the worker.
                with contextlib.suppress(AssertionError):
                    await peer.terminate()
                if peer.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(worker), signal.SIGKILL)


# -- aiotls's side -------------------------------------------------------------------


@dataclass
class Seen:
    """What one side saw of a connection: negotiated protocol and cipher, and the data."""

    protocol: str | None
    cipher: dict[str, str] | None
    nbytes: int
    sha256: str


def _negotiated(writer: asyncio.StreamWriter) -> tuple[str | None, dict[str, str] | None]:
    tls = writer.get_extra_info("tls")
    return tls.get_protocol(), tls.get_cipher()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    # The peer may drop TCP without its close_notify (s_server -rev does): not our concern.
    with contextlib.suppress(aiotls.TLSError, ConnectionError):
        await writer.wait_closed()


@contextlib.asynccontextmanager
async def aiotls_echo_server(
    expect: int, **options: Any
) -> AsyncIterator[tuple[int, asyncio.Future[Seen]]]:
    """An aiotls server on 127.0.0.1 that echoes ``expect`` bytes of its first connection.

    After echoing ``expect`` bytes (or on EOF) it closes that connection. Yields the
    port and a future of what the server saw; ``options`` go to ``start_server``.
    """
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[Seen] = loop.create_future()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest, nbytes = hashlib.sha256(), 0
        try:
            protocol, cipher = _negotiated(writer)
            while nbytes < expect:
                chunk = await reader.read(min(_CHUNK, expect - nbytes))
                if not chunk:
                    break
                digest.update(chunk)
                nbytes += len(chunk)
                writer.write(chunk)
                await writer.drain()
        except Exception as exc:
            if not seen.done():
                seen.set_exception(exc)
            return
        finally:
            await _close(writer)
        if not seen.done():
            seen.set_result(Seen(protocol, cipher, nbytes, digest.hexdigest()))

    options.setdefault("shutdown_timeout", 2.0)
    server = await aiotls.start_server(echo, HOST, 0, **options)
    address = server.address()
    assert isinstance(address, dict)
    try:
        yield address["port"], seen
    finally:
        server.close()
        await server.wait_closed()
        if not seen.done():
            seen.cancel()


async def aiotls_exchange(port: int, payload: bytes, expect: int, **options: Any) -> Seen:
    """Connect with aiotls, send ``payload`` while reading ``expect`` bytes back, close.

    The returned :class:`Seen` describes the bytes *received*.
    """
    options.setdefault("shutdown_timeout", 2.0)
    async with asyncio.timeout(PEER_TIMEOUT):
        reader, writer = await aiotls.open_connection(HOST, port, **options)
        try:
            protocol, cipher = _negotiated(writer)

            async def send() -> None:
                for i in range(0, len(payload), _CHUNK):
                    writer.write(payload[i : i + _CHUNK])
                    await writer.drain()

            sender = asyncio.ensure_future(send())
            try:
                received = await reader.readexactly(expect)
                await sender
            finally:
                sender.cancel()
        finally:
            await _close(writer)
    return Seen(protocol, cipher, len(received), sha256(received))


def version_options(version: str) -> dict[str, str]:
    """aiotls options pinning the connection to exactly ``version``."""
    return {"min_version": version, "max_version": version}
