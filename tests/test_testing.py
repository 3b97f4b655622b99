"""aiotls.testing, the pytest plugin: its fixtures here (loaded through the entry point,
on both loops), and in a fresh project run by pytester as a user's suite would be."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aiotls
from aiotls.testing import EphemeralCA, TLSTestServer

pytest_plugins = ["pytester"]


async def test_tls_server_echoes_to_a_verified_client(tls_server: TLSTestServer) -> None:
    reader, writer = await tls_server.connect()
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    tls = writer.get_extra_info("tls")
    assert tls.authorized and tls.servername == "localhost"
    assert tls.get_peer_certificate()["subjectaltname"] == (
        "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"
    )
    assert tls_server.server.get_connections() == 1  # left open: the fixture closes it


async def test_tls_client_options_with_any_front_door(
    tls_server: TLSTestServer, tls_client_options: dict[str, Any], tls_ca: EphemeralCA
) -> None:
    assert tls_client_options == {"ca": tls_ca.cert_pem, "servername": "localhost"}
    transport, _ = await aiotls.create_connection(
        asyncio.Protocol, tls_server.host, tls_server.port, **tls_client_options
    )
    assert transport.authorized
    transport.close()


async def _greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(f"hello over {writer.get_extra_info('tls').alpn_protocol}\n".encode())
    writer.close()


@pytest.mark.parametrize("tls_server_handler", [_greet])
@pytest.mark.parametrize("tls_server_options", [{"alpn_protocols": ["h2"]}])
async def test_handler_and_options_are_overridable(tls_server: TLSTestServer) -> None:
    reader, _ = await tls_server.connect(alpn_protocols=["h2"])
    assert await reader.readline() == b"hello over h2\n"


class TestMutualTLS:
    """A class (or module, or conftest) overrides tls_server_options for its tests."""

    @pytest.fixture
    def tls_server_options(self, tls_ca: EphemeralCA) -> dict[str, Any]:
        return {"ca": tls_ca.cert_pem, "request_cert": True, "reject_unauthorized": True}

    async def test_client_certificates_and_a_crl(
        self, tls_server: TLSTestServer, tls_ca: EphemeralCA, tls_server_options: dict[str, Any]
    ) -> None:
        alice, mallory = tls_ca.identity("alice.test"), tls_ca.identity("mallory.test")
        reader, writer = await tls_server.connect(**alice)
        writer.write(b"hi")
        assert await reader.readexactly(2) == b"hi"
        crl = tls_ca.crl([mallory["cert"]])
        tls_server.server.set_secure_context(
            {**tls_ca.identity("localhost"), **tls_server_options, "crl": crl}
        )
        reader, writer = await tls_server.connect(**mallory)
        writer.write(b"hi")
        with pytest.raises(aiotls.TLSError) as refused:
            await reader.readexactly(2)  # TLS 1.3: the verdict follows the client's Finished
        assert "REVOKED" in str(refused.value.code)
        reader, writer = await tls_server.connect(**alice)  # alice is not on the CRL
        writer.write(b"hi")
        assert await reader.readexactly(2) == b"hi"


USER_SUITE = """
import pytest
import aiotls

@pytest.mark.asyncio
async def test_echo(tls_server):
    reader, writer = await tls_server.connect()
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"
    assert writer.get_extra_info("tls").authorized

@pytest.mark.asyncio
async def test_own_client(tls_server, tls_client_options):
    reader, writer = await aiotls.open_connection(
        tls_server.host, tls_server.port, **tls_client_options)
    writer.close()
    await writer.wait_closed()

def test_ca(tls_ca):
    assert tls_ca.cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")
"""


def test_plugin_loads_by_entry_point_in_a_fresh_project(pytester: pytest.Pytester) -> None:
    """No conftest, no import of aiotls.testing, pytest-asyncio in strict mode."""
    pytester.makeini("[pytest]\nasyncio_mode = strict\n")
    pytester.makepyfile(test_user=USER_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    result.stdout.re_match_lines(
        [
            r"-+ fixtures defined from aiotls\.testing -+",
            r"tls_ca \[session scope\] -- .*",
            r"\s+An ephemeral CA shared by the test session\.",
            r"tls_client_options -- .*",
            r"\s+Client options that verify ``tls_server``.*",
            r"tls_server -- .*",
            r"\s+An aiotls server on 127\.0\.0\.1 .*",
        ],
        consecutive=False,
    )
