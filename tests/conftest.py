"""Shared fixtures: trustme certificates and both event loops (asyncio and uvloop)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
import trustme

import aiotls

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is an extra
    uvloop = None

_LOOPS = os.environ.get("AIOTLS_TEST_LOOPS", "asyncio,uvloop").split(",")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs once on asyncio's default loop and once on uvloop."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {}
    if "asyncio" in _LOOPS:
        factories["asyncio"] = asyncio.new_event_loop
    if "uvloop" in _LOOPS and uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1", "::1", "example.test")


@pytest.fixture(scope="session")
def client_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("client@example.test", common_name="client")


@pytest.fixture(scope="session")
def ca_pem(ca: trustme.CA) -> str:
    return ca.cert_pem.bytes().decode()


@pytest.fixture(scope="session")
def server_key_pem(server_cert: trustme.LeafCert) -> str:
    return server_cert.private_key_pem.bytes().decode()


@pytest.fixture(scope="session")
def server_chain_pem(server_cert: trustme.LeafCert) -> str:
    return "".join(blob.bytes().decode() for blob in server_cert.cert_chain_pems)


@pytest.fixture(scope="session")
def server_files(
    tmp_path_factory: pytest.TempPathFactory, server_cert: trustme.LeafCert, ca: trustme.CA
) -> dict[str, str]:
    """The server's key, chain and the CA as files, for peers that take paths."""
    d = tmp_path_factory.mktemp("pki")
    paths = {"key": d / "server.key", "cert": d / "server.pem", "ca": d / "ca.pem"}
    server_cert.private_key_pem.write_to_path(str(paths["key"]))
    with open(paths["cert"], "wb") as f:
        for blob in server_cert.cert_chain_pems:
            f.write(blob.bytes())
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="session")
def server_ctx(server_key_pem: str, server_chain_pem: str) -> aiotls.SecureContext:
    return aiotls.create_secure_context(key=server_key_pem, cert=server_chain_pem)


@pytest.fixture(scope="session")
def client_ctx(ca_pem: str) -> aiotls.SecureContext:
    return aiotls.create_secure_context(ca=ca_pem)
