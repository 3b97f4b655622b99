"""Helpers of the ``aiotls proxy`` tests: certificate files, TOML files, plain TCP
backends, the proxy in-process or as a process, its access log and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from peers import HOST, PeerProcess, run_peer
from prometheus_client.parser import text_string_to_metric_families

import aiotls
from aiotls.proxy import Proxy, load_config

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def write_identity(directory: Path, ca: trustme.CA, *names: str, stem: str = "") -> dict[str, str]:
    """A server certificate for ``names`` from ``ca``: ``{"cert", "key"}`` file paths."""
    leaf = ca.issue_cert(*names)
    stem = stem or names[0].replace("*", "star")
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return {"cert": str(cert), "key": str(key)}


def client_identity(
    ca: trustme.CA, cn: str, *, dns: tuple[str, ...] = (), uris: tuple[str, ...] = ()
) -> dict[str, bytes]:
    """A client certificate from ``ca`` with subject CN ``cn`` and these SANs, as the
    ``key``/``cert`` options of an aiotls client."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    names = [x509.DNSName(n) for n in dns] + [x509.UniformResourceIdentifier(u) for u in uris]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return {
        "cert": cert.public_bytes(serialization.Encoding.PEM),
        "key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def write_config(path: Path, proxy: dict[str, Any], routes: list[dict[str, Any]]) -> Path:
    """A TOML file with a ``[proxy]`` table and ``[[route]]`` tables (and their
    ``client_auth`` sub-tables)."""
    lines = ["[proxy]"] + [f"{k} = {_toml_value(v)}" for k, v in proxy.items()]
    for route in routes:
        lines.append("\n[[route]]")
        auth = route.get("client_auth")
        lines += [f"{k} = {_toml_value(v)}" for k, v in route.items() if k != "client_auth"]
        if auth:
            lines.append("[route.client_auth]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in auth.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Backend:
    """A plain TCP server on 127.0.0.1 standing in for a proxied application."""

    server: asyncio.Server
    port: int
    connections: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@contextlib.asynccontextmanager
async def backend(handler: Handler, **kw: Any) -> AsyncIterator[Backend]:
    """Serve ``handler`` on a free port; its connections are closed on the way out."""
    record: list[asyncio.StreamWriter] = []

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record.append(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(run, HOST, 0, **kw)
    try:
        yield Backend(server, server.sockets[0].getsockname()[1], record)
    finally:
        for writer in record:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF, then close."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def greeter(name: str) -> Handler:
    """A backend that says ``name`` and a newline, then echoes."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(name.encode() + b"\n")
        await echo(reader, writer)

    return greet


def access_records(path: Path) -> list[dict[str, Any]]:
    """The access log's lines so far, parsed."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def proxy_port(proxy: Proxy) -> int:
    return int(proxy.address().rpartition(":")[2])


@contextlib.asynccontextmanager
async def running(path: Path) -> AsyncIterator[Proxy]:
    """The proxy of the file ``path``, in this process."""
    async with Proxy(load_config(path)) as proxy:
        yield proxy


async def connect(port: int, ca: trustme.CA, servername: str = "localhost", **kw: Any) -> Any:
    """An aiotls client connection to the proxy, verifying its certificate."""
    return await aiotls.open_connection(
        HOST, port, ca=ca.cert_pem.bytes(), servername=servername, **kw
    )


async def read_all(reader: asyncio.StreamReader, timeout: float = 10.0) -> bytes:
    """Everything until EOF (bounded in time)."""
    async with asyncio.timeout(timeout):
        return await reader.read()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(aiotls.TLSError, ConnectionError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 5)


def samples(text: str) -> dict[str, float]:
    """Prometheus text parsed by prometheus_client: ``{'name{label="v",...}': value}``
    (labels sorted by name)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


async def scrape(address: str) -> dict[str, float]:
    """``GET /metrics`` from the endpoint at ``address``, parsed (see :func:`samples`)."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(10):
        response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"text/plain; version=0.0.4" in head
    return samples(body.decode())


@contextlib.asynccontextmanager
async def proxy_process(config: Path, *extra: str) -> AsyncIterator[tuple[PeerProcess, int]]:
    """``python -m aiotls proxy --config config`` as a process; yields it and its port
    (from its "listening on" line)."""
    argv = [sys.executable, "-m", "aiotls", "proxy", "--config", str(config), *extra]
    async with run_peer(*argv) as proc:
        (port,) = await proc.wait_for_output(r"^listening on \S+:(\d+)$")
        yield proc, int(port)
