"""Option values as Python users give them (issue 7, items 10, 18 and 19b).

- files as ``pathlib.Path`` for key, cert, ca, crl, pfx and dhparam (also in lists and in
  per-key ``pem`` / per-pfx ``buf``), read at create time; a ``str`` is PEM content, and a
  ``str`` that names a file instead gets an error saying how to pass it. A missing file is
  the ``OSError`` of ``open`` (FileNotFoundError, ...) with the option in its message;
- a shared passphrase is ignored by keys and pfx files that are not encrypted (Node's rule),
  and "bad passphrase?" is said only where a passphrase could be the problem;
- an unknown keyword names the option it most likely meant, at create_secure_context and
  at every front door, while asyncio's own listen/connect keywords stay valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from parity import FFDHE2048_P, HOST, Pki, connected, dh_pem, error_code, issue, refused, serving
from test_parity_context import DHE_CLIENT, NO_FFDHE, PASSPHRASE, crl_pem, encrypted, pkcs12_of

import aiotls

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(scope="module")
def rsa() -> Pki:
    return issue(trustme.CA(key_type=trustme.KeyType.RSA), trustme.KeyType.RSA)


@pytest.fixture(scope="module")
def files(rsa: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``rsa``'s material as files: plain and encrypted key, chain, CA, pfx, dhparam, CRLs."""
    d = tmp_path_factory.mktemp("inputs")
    assert rsa.ca is not None
    contents: dict[str, str | bytes] = {
        "key": rsa.key,
        "locked_key": encrypted(rsa.key, PASSPHRASE),
        "cert": rsa.chain,
        "ca": rsa.ca_pem,
        "stranger_ca": trustme.CA().cert_pem.bytes().decode(),
        "pfx": pkcs12_of(rsa, PASSPHRASE),
        "dhparam": dh_pem(FFDHE2048_P),
        "crl_none": crl_pem(rsa.ca, []),
        "crl_leaf": crl_pem(rsa.ca, [rsa.cert.serial_number]),
        "not_pem": "just some text\n",
    }
    paths = {}
    for name, data in contents.items():
        paths[name] = d / (f"{name}.p12" if name == "pfx" else f"{name}.pem")
        if isinstance(data, str):
            paths[name].write_text(data)
        else:
            paths[name].write_bytes(data)
    return paths


# -- item 18: paths and contents ------------------------------------------------------


@pytest.mark.parametrize("form", ["paths", "lists", "per-key", "pfx", "per-pfx"])
async def test_paths_are_files_to_read(form: str, rsa: Pki, files: dict[str, Path]) -> None:
    server: dict[str, Any] = {
        "paths": {"key": files["key"], "cert": files["cert"], "dhparam": files["dhparam"]},
        "lists": {"key": [files["key"]], "cert": [files["cert"]], "dhparam": files["dhparam"]},
        "per-key": {
            "key": [{"pem": files["locked_key"], "passphrase": PASSPHRASE}],
            "cert": files["cert"],
            "dhparam": files["dhparam"],
        },
        "pfx": {"pfx": files["pfx"], "passphrase": PASSPHRASE, "dhparam": files["dhparam"]},
        "per-pfx": {
            "pfx": [{"buf": files["pfx"], "passphrase": PASSPHRASE}],
            "dhparam": files["dhparam"],
        },
    }[form]
    client: dict[str, Any] = {
        "ca": [files["stranger_ca"], files["ca"]] if form == "lists" else files["ca"],
        "crl": [files["crl_none"]] if form == "lists" else files["crl_none"],
    }
    async with (
        serving(**server) as served,
        connected(served.port, **client, **DHE_CLIENT, **NO_FFDHE) as tls,
    ):
        assert tls.authorized
        assert tls.get_peer_certificate()["fingerprint256"] == rsa.fingerprint256
        # dhparam was read from its file: the DHE suite is on, with its 2048-bit group.
        assert tls.get_cipher()["name"] == DHE_CLIENT["ciphers"]
        assert tls.get_ephemeral_key_info() == {"type": "DH", "size": 2048}


async def test_crl_path_is_read(rsa: Pki, files: dict[str, Path]) -> None:
    async with serving(key=files["key"], cert=files["cert"]) as served:
        exc = await refused(served.port, ca=files["ca"], crl=files["crl_leaf"])
        assert error_code(exc) == "CERT_REVOKED"


OPTIONS_FILES = {
    "key": "key",
    "cert": "cert",
    "ca": "ca",
    "crl": "crl_none",
    "dhparam": "dhparam",
    "pfx": "pfx",
}


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
@pytest.mark.parametrize("option", OPTIONS_FILES)
def test_a_file_name_given_as_contents_says_how_to_pass_it(
    option: str, as_bytes: bool, files: dict[str, Path]
) -> None:
    name = str(files[OPTIONS_FILES[option]])
    kind = "PKCS#12" if option == "pfx" else "PEM"
    message = (
        f"{option}: got a file name '{name}', not {kind} data;"
        f" pass pathlib.Path('{name}') or the file's contents"
    )
    with pytest.raises(aiotls.TLSConfigError, match=f"^{re.escape(message)}$"):
        aiotls.create_secure_context(**{option: name.encode() if as_bytes else name})


@pytest.mark.parametrize("option", ["key", "cert", "ca", "crl", "dhparam"])
def test_neither_pem_nor_a_file_says_what_was_expected(option: str) -> None:
    secretish = "c2VjcmV0IGtleSBtYXRlcmlhbA=="  # not PEM, not a file: never echoed back
    with pytest.raises(aiotls.TLSConfigError) as info:
        aiotls.create_secure_context(**{option: secretish})
    message = str(info.value)
    assert message.startswith(f"{option}: expected PEM data ('-----BEGIN ...') or a pathlib.Path;")
    assert "neither PEM nor the name of an existing file" in message
    assert secretish not in message
    if option != "dhparam":  # the same inside a list (dhparam takes one value)
        with pytest.raises(aiotls.TLSConfigError, match=f"^{option}: expected PEM data"):
            aiotls.create_secure_context(**{option: [secretish]})
    with pytest.raises(aiotls.TLSConfigError, match=r"^key: expected PEM data"):
        aiotls.create_secure_context(key=[{"pem": secretish}])


@pytest.mark.parametrize("option", ["key", "cert", "ca", "crl", "dhparam", "pfx"])
def test_path_problems_name_the_option_and_the_path(
    option: str, files: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(FileNotFoundError) as info:
        aiotls.create_secure_context(**{option: missing})
    assert str(info.value) == f"[Errno 2] {option}: No such file or directory: '{missing}'"
    assert info.value.filename == str(missing)
    if option != "pfx":  # PKCS#12 is binary: only PEM options look for a PEM block
        with pytest.raises(aiotls.TLSConfigError, match=f"^{option}: no PEM data .* in file "):
            aiotls.create_secure_context(**{option: files["not_pem"]})
    with pytest.raises(TypeError, match=f"^{option}: expected .* or a pathlib.Path, got int"):
        aiotls.create_secure_context(**{option: 1234})


def test_pfx_str_that_is_not_a_file_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"^pfx: expected the PKCS#12 bytes or a pathlib.Path"):
        aiotls.create_secure_context(pfx="not bytes")


# -- item 10: passphrases -------------------------------------------------------------


def test_shared_passphrase_is_ignored_where_nothing_is_encrypted(rsa: Pki) -> None:
    plain_pfx = pkcs12_of(rsa, None)
    for options in (
        {"key": rsa.key, "cert": rsa.chain},
        {"key": [{"pem": rsa.key, "passphrase": "unused"}], "cert": rsa.chain},
        {"pfx": plain_pfx},
        {"pfx": [{"buf": plain_pfx, "passphrase": "unused"}]},
    ):
        ctx = aiotls.create_secure_context(passphrase=PASSPHRASE, **options)
        assert ctx.certificates[0] == rsa.cert


def test_bad_passphrase_is_suspected_only_where_it_matters(rsa: Pki) -> None:
    corrupt = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    with pytest.raises(aiotls.TLSConfigError, match=r"^key: cannot load private key: ") as info:
        aiotls.create_secure_context(key=corrupt, cert=rsa.chain, passphrase=PASSPHRASE)
    assert "passphrase" not in str(info.value)
    locked = encrypted(rsa.key, PASSPHRASE)
    with pytest.raises(aiotls.TLSConfigError, match=r"^key: .*\(bad passphrase\?\)"):
        aiotls.create_secure_context(key=locked, cert=rsa.chain, passphrase="wrong")
    pfx = pkcs12_of(rsa, PASSPHRASE)
    with pytest.raises(aiotls.TLSConfigError, match=r"^pfx: .*\(bad passphrase\?\)"):
        aiotls.create_secure_context(pfx=pfx, passphrase="wrong")
    with pytest.raises(aiotls.TLSConfigError, match=r"^pfx: .*\(encrypted\? give passphrase\)"):
        aiotls.create_secure_context(pfx=pfx)


# -- item 19b: unknown keywords -------------------------------------------------------


@contextlib.asynccontextmanager
async def plain_connection() -> AsyncIterator[asyncio.StreamWriter]:
    """A plain TCP connection on loopback (for start_tls), closed afterwards."""
    server = await asyncio.start_server(lambda r, w: None, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection(HOST, port)
    try:
        yield writer
    finally:
        writer.close()
        server.close()


async def call(door: str, **kwargs: Any) -> None:
    """Call one front door with ``kwargs`` (the tests expect it to raise before any I/O)."""
    if door == "create_secure_context":
        aiotls.create_secure_context(**kwargs)
    elif door in {"open_connection", "create_connection"}:
        args = () if door == "open_connection" else (asyncio.Protocol,)
        await getattr(aiotls, door)(*args, HOST, 9, **kwargs)
    elif door in {"start_server", "create_server"}:
        handler = (lambda r, w: None) if door == "start_server" else asyncio.Protocol
        server = await getattr(aiotls, door)(handler, HOST, 0, **kwargs)
        server.close()  # not reached when the keyword is refused
    else:
        async with plain_connection() as writer:
            await aiotls.start_tls(writer, **kwargs)


CLIENTS = ["open_connection", "create_connection", "start_tls"]
SERVERS = ["start_server", "create_server"]


@pytest.mark.parametrize(
    ("doors", "name", "hint"),
    [
        (CLIENTS, "server_hostname", "did you mean 'servername'?"),
        (CLIENTS, "ssl", "did you mean 'context'?"),
        (CLIENTS + SERVERS, "cafile", "did you mean 'ca'?"),
        (CLIENTS + SERVERS, "certfile", "did you mean 'cert'?"),
        (CLIENTS + SERVERS, "keyfile", "did you mean 'key'?"),
        (CLIENTS, "reject_unauthorised", "did you mean 'reject_unauthorized'?"),
        (CLIENTS + SERVERS, "ssl_handshake_timeout", "did you mean 'handshake_timeout'?"),
        (SERVERS, "ssl_shutdown_timeout", "did you mean 'shutdown_timeout'?"),
        (["open_connection"], "check_hostname", "did you mean 'check_server_identity'?"),
        (["open_connection"], "rejectUnauthorized", "did you mean 'reject_unauthorized'?"),
        (["start_server"], "SNICallback", "did you mean 'sni_callback'?"),
        (["start_server"], "reuse_adress", "did you mean 'reuse_address'?"),
        (["open_connection"], "local_adr", "did you mean 'local_addr'?"),
        (["open_connection"], "sni_callback", "a server option"),
        (["create_server"], "servername", "a client option"),
        (["start_server"], "server_hostname", "did you mean 'servername'? a client option"),
        (["create_secure_context"], "cafile", "did you mean 'ca'?"),
        (["create_secure_context"], "reject_unauthorised", "did you mean 'reject_unauthorized'?"),
        (["create_secure_context"], "ALPNProtocols", "did you mean 'alpn_protocols'?"),
        (
            ["create_secure_context"],
            "server_hostname",
            "did you mean 'servername'? an option of the connection, not of create_secure_context",
        ),
    ],
)
async def test_unknown_keyword_suggests_the_right_one(
    doors: list[str], name: str, hint: str
) -> None:
    for door in doors:
        message = f"{door}: unknown option {name!r} ({hint})"
        with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
            await call(door, **{name: None})


async def test_several_unknown_keywords_are_all_named() -> None:
    message = (
        "open_connection: unknown option 'bogus'; "
        "unknown option 'server_hostname' (did you mean 'servername'?)"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        await call("open_connection", server_hostname="localhost", bogus=1)


async def test_asyncio_listen_and_connect_keywords_stay_valid(rsa: Pki) -> None:
    async with (
        serving(**rsa.identity(), reuse_address=True, backlog=8) as served,
        connected(served.port, ca=rsa.ca_pem, local_addr=(HOST, 0)) as tls,
    ):
        assert tls.authorized
        assert tls.local_address == HOST
