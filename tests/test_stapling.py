"""OCSP stapling: the server's on_ocsp_request, the client's request_ocsp/on_ocsp_response,
a real `openssl ocsp` responder behind them, and `openssl s_client -status` as a peer."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp
from ocsp_util import PKI, Issued, OCSPResponder, make_pki
from peers import HOST, require, run_peer
from util import echo, eventually, tls_server

import aiotls
from aiotls import ocsp


@pytest.fixture
def pki(tmp_path) -> PKI:
    return make_pki(tmp_path)


def _ctx(leaf: Issued, pki: PKI) -> aiotls.SecureContext:
    # The chain includes the CA, so on_ocsp_request gets the issuer from the context.
    return aiotls.create_secure_context(key=leaf.key_pem, cert=leaf.cert_pem + pki.ca.cert_pem)


async def _fetch_staple(cert: x509.Certificate, issuer: x509.Certificate | None) -> bytes | None:
    assert issuer is not None
    return await ocsp.fetch(cert, issuer, timeout=5)


async def _client(port: int, pki: PKI, **kw: object) -> list[bytes | None]:
    staples: list[bytes | None] = []
    reader, writer = await aiotls.open_connection(
        HOST, port, ca=pki.ca.cert_pem, servername="localhost",
        on_ocsp_response=staples.append, **kw,
    )  # fmt: skip
    writer.close()
    return staples


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
async def test_stapled_good_and_revoked_answers_from_a_real_responder(pki: PKI, version) -> None:
    with OCSPResponder.for_pki(pki):
        for leaf, expected in ((pki.good, "good"), (pki.revoked, "revoked")):
            async with tls_server(echo, _ctx(leaf, pki), on_ocsp_request=_fetch_staple) as (
                _,
                port,
            ):
                staples = await _client(port, pki, request_ocsp=True, max_version=version)
            assert len(staples) == 1 and staples[0] is not None
            status = ocsp.verify(staples[0], leaf.cert, pki.ca.cert)
            assert status.status == expected


async def test_hook_only_when_the_client_asks(pki: PKI) -> None:
    calls: list[tuple[x509.Certificate, x509.Certificate | None]] = []

    async def hook(cert: x509.Certificate, issuer: x509.Certificate | None) -> bytes | None:
        calls.append((cert, issuer))
        return None  # staple nothing

    async with tls_server(echo, _ctx(pki.good, pki), on_ocsp_request=hook) as (_, port):
        assert await _client(port, pki) == []  # did not ask: no hook, no callback
        assert calls == []
        assert await _client(port, pki, request_ocsp=True) == [None]  # asked, nothing stapled
        assert calls == [(pki.good.cert, pki.ca.cert)]


async def test_a_failing_ocsp_hook_fails_only_its_handshake(pki: PKI) -> None:
    errors: list[BaseException] = []

    def hook(cert: x509.Certificate, issuer: x509.Certificate | None) -> object:
        return "not bytes"

    async with tls_server(
        echo, _ctx(pki.good, pki), on_ocsp_request=hook,
        on_tls_client_error=lambda exc, t: errors.append(exc),
    ) as (_, port):  # fmt: skip
        with pytest.raises((aiotls.TLSError, ConnectionError)):
            await _client(port, pki, request_ocsp=True)
        await eventually(lambda: errors, timeout=1)
        assert isinstance(errors[0], aiotls.TLSError) and "on_ocsp_request" in str(errors[0])
        assert await _client(port, pki) == []  # others are still served


async def test_openssl_s_client_status_shows_the_staple(pki: PKI) -> None:
    require("openssl")
    with OCSPResponder.for_pki(pki):
        async with tls_server(echo, _ctx(pki.good, pki), on_ocsp_request=_fetch_staple) as (
            _,
            port,
        ):
            argv = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-status",
                    "-CAfile", str(pki.ca.cert_path), "-servername", "localhost"]  # fmt: skip
            async with run_peer(*argv) as peer:
                await peer.wait_for_output(r"(Verify return code: 0)")
                await peer.feed(b"", close=True)
                await peer.wait()
    out = peer.stdout.decode(errors="replace")
    assert "OCSP Response Status: successful" in out
    assert "Cert Status: good" in out


def test_staple_parses_as_an_ocsp_response(pki: PKI) -> None:
    """The helper's builder and aiotls.ocsp agree on the format the staple carries."""
    request = ocsp.build_request(pki.good.cert, pki.ca.cert)
    assert x509_ocsp.load_der_ocsp_request(request).serial_number == pki.good.cert.serial_number
