"""Session resumption survives unclean closes (the server cache keeps the session)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from aiotls.testing import TLSTestServer

OP_NO_TICKET = 0x4000


@pytest.mark.timeout(20)
@pytest.mark.parametrize("tls_server_options", [{"secure_options": OP_NO_TICKET}])
@pytest.mark.parametrize("how", ["abort", "close"])
async def test_tls12_session_id_resumes_after_unclean_close(
    tls_server: TLSTestServer, how: str
) -> None:
    reader, writer = await tls_server.connect(max_version="TLSv1.2")
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
    while tls_server.server.get_connections():  # the server has seen the reset or EOF
        await asyncio.sleep(0.01)
    gc.collect()  # and has freed that connection's SSL object
    reader, writer = await tls_server.connect(max_version="TLSv1.2", session=session)
    assert writer.get_extra_info("tls").session_reused


async def test_junk_session_means_full_handshake(tls_server: TLSTestServer) -> None:
    reader, writer = await tls_server.connect(session=b"junk" * 20)
    assert not writer.get_extra_info("tls").session_reused
