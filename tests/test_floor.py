"""The OpenSSL floor and the contexts built on it: complete when created, checked at the
front door, never changed by a connection; the data path's function pointers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from peers import HOST
from util import echo, tls_server

import aiotls
from aiotls._openssl import binding
from aiotls._openssl import extended as _extended
from aiotls._openssl.fnptrs import FUNCTIONS, openssl_functions


@pytest.fixture
def no_extended_access(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the symbol-table resolver fail, as on a stripped or non-Linux build."""
    monkeypatch.setattr(_extended, "_library_path", lambda: "/nonexistent/_rust.abi3.so")
    monkeypatch.setattr(_extended, "_resolver", None)
    assert not aiotls.features()["new_session_cb"]


@pytest.mark.usefixtures("no_extended_access")
@pytest.mark.parametrize(
    ("side", "option"),
    [
        ("server", "on_new_session"),
        ("server", "on_resume_session"),
        ("client", "on_session"),
    ],
)
async def test_a_missing_feature_raises_at_the_front_door(
    side: str, option: str, server_key_pem: str, server_chain_pem: str, ca_pem: str
) -> None:
    """The call that received the option raises, naming it (before: the server started and
    every accepted connection failed in the protocol factory, with nothing logged)."""
    hook = lambda *args: None  # noqa: E731
    with pytest.raises(aiotls.TLSFeatureUnavailable, match=option):
        if side == "server":
            ctx = aiotls.create_secure_context(key=server_key_pem, cert=server_chain_pem)
            server = await aiotls.start_server(echo, HOST, 0, context=ctx, **{option: hook})
            server.close()  # only reached by the old code
            await server.wait_closed()
        else:
            listener = await asyncio.start_server(lambda r, w: w.close(), HOST, 0)
            port = listener.sockets[0].getsockname()[1]
            async with listener:
                await aiotls.open_connection(
                    HOST, port, ca=ca_pem, servername="localhost", **{option: hook}
                )


async def test_the_system_trust_is_loaded_when_the_context_is_created(
    ca_pem: str,
    server_ctx: aiotls.SecureContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A context without ``ca`` holds the system trust once created: what the environment
    says later does not change it (before: loaded at the first client connection)."""
    bundle = tmp_path / "system.pem"
    bundle.write_text(ca_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    client_ctx = aiotls.create_secure_context()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    async with tls_server(echo, server_ctx) as (_, port):
        reader, writer = await aiotls.open_connection(
            HOST, port, context=client_ctx, servername="localhost"
        )
        assert writer.get_extra_info("tls").authorized
        writer.close()
        await writer.wait_closed()


def test_data_path_pointers_are_the_functions_cffi_calls() -> None:
    """The addresses a compiled data path calls are those of cryptography's OpenSSL."""
    pointers = dict(zip((name for name, _ in FUNCTIONS), openssl_functions(), strict=True))
    assert all(pointers.values()) and len(set(pointers.values())) == len(pointers)
    compiled = binding.original_lib()
    for name, addr in pointers.items():
        assert addr == binding.address(binding.ffi.addressof(compiled, name))


def test_an_engine_reports_its_raw_pointers(
    server_ctx: aiotls.SecureContext, client_ctx: aiotls.SecureContext
) -> None:
    engine = aiotls.TLSEngine(client_ctx, server_hostname="localhost")
    ssl, bio_in, bio_out = engine.raw_addresses()
    assert ssl and bio_in and bio_out and len({ssl, bio_in, bio_out}) == 3
    engine.compact()
    assert engine.raw_addresses()[0] == ssl
