"""Session resumption survives unclean closes (the server cache keeps the session)."""

from __future__ import annotations

import asyncio
import gc

import pytest
from util import echo, tls_server

import aiotls

OP_NO_TICKET = 0x4000


@pytest.mark.timeout(20)
@pytest.mark.parametrize("how", ["abort", "close"])
async def test_tls12_session_id_resumes_after_unclean_close(
    server_key_pem: str, server_chain_pem: str, ca_pem: str, how: str
) -> None:
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, secure_options=OP_NO_TICKET
    )
    client_ctx = aiotls.create_secure_context(ca=ca_pem, max_version="TLSv1.2")
    async with tls_server(echo, ctx) as (server, port):
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, context=client_ctx, servername="localhost"
        )
        writer.write(b"x")
        await reader.readexactly(1)
        tls = writer.get_extra_info("tls")
        session = tls.get_session()
        assert session and not tls.session_reused
        if how == "abort":
            writer.transport.abort()  # a reset: no close_notify either way
        else:
            writer.close()
            await writer.wait_closed()
        while server.get_connections():  # the server has seen the reset or EOF
            await asyncio.sleep(0.01)
        gc.collect()  # and has freed that connection's SSL object
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, context=client_ctx, servername="localhost", session=session
        )
        assert writer.get_extra_info("tls").session_reused
        writer.close()
        await writer.wait_closed()


async def test_junk_session_means_full_handshake(server_ctx, client_ctx) -> None:
    async with tls_server(echo, server_ctx) as (_, port):
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, context=client_ctx, servername="localhost", session=b"junk" * 20
        )
        assert not writer.get_extra_info("tls").session_reused
        writer.close()
