"""Automatic OCSP stapling (``ocsp_stapling="auto"``, aiotls.stapling.OCSPStapler).

Against a real ``openssl ocsp`` responder (good, revoked, killed, bad signatures) and,
where openssl cannot (its nextUpdate is whole minutes; it cannot answer junk), a small
in-process HTTP responder on the same port signing with the same delegated responder
key. Staples are checked with the aiotls client (request_ocsp + on_ocsp_response, then
aiotls.ocsp.verify) and once with ``openssl s_client -status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from ocsp_util import (
    PKI,
    Issued,
    OCSPResponder,
    build_response,
    cert_pem,
    index_line,
    key_pem,
    make_pki,
    new_key,
    sign_hash,
)
from peers import HOST, require, run_peer
from util import echo, eventually, tls_server

import aiotls
from aiotls import ocsp
from aiotls.stapling import OCSPStapler

pytestmark = pytest.mark.timeout(40)
UTC = datetime.UTC
GOOD, REVOKED = x509_ocsp.OCSPCertStatus.GOOD, x509_ocsp.OCSPCertStatus.REVOKED


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return make_pki(tmp_path)


def chain(leaf: Issued, pki: PKI) -> aiotls.SecureContext:
    """The leaf with the CA in its chain, so the stapler knows the issuer."""
    return aiotls.create_secure_context(key=leaf.key_pem, cert=leaf.cert_pem + pki.ca.cert_pem)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def state(server: aiotls.Server, leaf: Issued) -> dict[str, Any]:
    return dict(server.ocsp_status()[fingerprint(leaf.cert)])


async def staples(port: int, pki: PKI, **kw: Any) -> list[bytes | None]:
    """Connect asking for status; what on_ocsp_response got."""
    got: list[bytes | None] = []
    kw = {"ca": pki.ca.cert_pem, "servername": "localhost", **kw}
    reader, writer = await aiotls.open_connection(
        HOST, port, request_ocsp=True, on_ocsp_response=got.append, **kw
    )
    writer.close()
    return got


async def stapled_status(port: int, pki: PKI, leaf: Issued) -> str | None:
    """The verified status the server stapled for ``leaf`` (None: nothing stapled)."""
    got = await staples(port, pki)
    assert len(got) == 1
    return None if got[0] is None else ocsp.verify(got[0], leaf.cert, pki.ca.cert).status


def must_staple_leaf(pki: PKI, stem: str, *, ocsp_url: str | None) -> Issued:
    """A leaf for localhost with the TLS Feature status_request extension (Must-Staple);
    its subject is unique, as openssl ocsp's index wants."""
    private = new_key("ec")
    now = datetime.datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{stem}.localhost")]))
        .issuer_name(pki.ca.cert.subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False)
    )
    if ocsp_url is not None:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
                    )
                ]
            ),
            critical=False,
        )
    cert = builder.sign(pki.ca.key, sign_hash(pki.ca.key))
    with pki.index_path.open("a") as f:
        f.write(index_line(cert))
    cert_path, key_path = pki.directory / f"{stem}.pem", pki.directory / f"{stem}.key"
    cert_path.write_bytes(cert_pem(cert))
    key_path.write_bytes(key_pem(private))
    return Issued(cert, private, cert_path, key_path)


class Responder:
    """An in-process HTTP OCSP responder on the PKI's AIA port: signed answers with a
    short validity (``validity`` seconds), or junk when ``junk`` is set."""

    def __init__(self, pki: PKI, validity: float) -> None:
        self.pki, self.validity, self.junk = pki, validity, False
        self.server: asyncio.Server | None = None
        self.answered = 0
        self.revoked = {pki.revoked.cert.serial_number}
        self.certs = {c.cert.serial_number: c.cert for c in (pki.good, pki.revoked)}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            request = x509_ocsp.load_der_ocsp_request(await reader.readexactly(min(length, 4096)))
            if self.junk:
                body = b"\x30\x03junk, not an OCSP response"
            else:
                now = datetime.datetime.now(UTC).replace(microsecond=0)
                revoked = request.serial_number in self.revoked
                body = build_response(
                    self.certs[request.serial_number], self.pki.ca.cert,
                    self.pki.responder.cert, self.pki.responder.key,
                    status=REVOKED if revoked else GOOD,
                    this_update=now,
                    next_update=now + datetime.timedelta(seconds=self.validity),
                )  # fmt: skip
            self.answered += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        writer.close()

    async def stop(self) -> None:
        """Stop listening (the responder is down); safe to call twice."""
        server, self.server = self.server, None
        if server is not None:
            server.close()
            await server.wait_closed()


@contextlib.asynccontextmanager
async def in_process_responder(pki: PKI, validity: float = 3600) -> AsyncIterator[Responder]:
    responder = Responder(pki, validity)
    responder.server = await asyncio.start_server(responder.handle, HOST, pki.ocsp_port)
    try:
        yield responder
    finally:
        await responder.stop()


# =========================================================================== good, revoked


@pytest.mark.parametrize("which", ["good", "revoked"])
async def test_auto_staples_the_verified_answer_of_a_real_responder(pki: PKI, which: str) -> None:
    leaf = getattr(pki, which)
    with OCSPResponder.for_pki(pki):
        async with tls_server(echo, chain(leaf, pki), ocsp_stapling="auto") as (server, port):
            # The first handshake waits (a little) for the first fetch: no need to wait here.
            assert await stapled_status(port, pki, leaf) == which
            st = state(server, leaf)
    assert st["status"] == which and st["stapling"] and st["source"] == "responder"
    assert int(st["serial"], 16) == leaf.cert.serial_number
    assert st["url"] == pki.ocsp_url and st["last_error"] is None and not st["must_staple"]
    assert st["fetches"] == 1 and st["failures"] == 0
    assert st["this_update"] <= st["last_fetch"] < st["next_refresh"] < st["next_update"]
    # Refreshed at about half its validity (nextUpdate is a day away), capped at an hour.
    assert st["next_refresh"] - st["last_fetch"] <= datetime.timedelta(hours=1)


async def test_openssl_s_client_sees_the_automatic_staple(pki: PKI) -> None:
    require("openssl")
    with OCSPResponder.for_pki(pki):
        async with tls_server(echo, chain(pki.good, pki), ocsp_stapling="auto") as (server, port):
            await eventually(lambda: state(server, pki.good)["stapling"], timeout=5)
            argv = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-status",
                    "-CAfile", str(pki.ca.cert_path), "-servername", "localhost"]  # fmt: skip
            async with run_peer(*argv) as peer:
                await peer.wait_for_output(r"(Verify return code: 0)")
                await peer.feed(b"", close=True)
                await peer.wait()
    out = peer.stdout.decode(errors="replace")
    assert "OCSP Response Status: successful" in out
    assert "Cert Status: good" in out


# =========================================================================== failures


async def test_responder_down_keeps_the_last_good_response(pki: PKI) -> None:
    stapler = OCSPStapler(max_refresh_interval=1.0, retry_initial=0.2, retry_max=0.5)
    async with (
        stapler,
        tls_server(echo, chain(pki.good, pki), ocsp_stapling=stapler) as (
            server,
            port,
        ),
    ):
        with OCSPResponder.for_pki(pki):
            await eventually(lambda: state(server, pki.good)["stapling"], timeout=5)
        # The responder is killed: the refreshes that follow fail.
        await eventually(lambda: state(server, pki.good)["failures"] >= 2, timeout=8)
        st = state(server, pki.good)
        assert "cannot connect" in st["last_error"] and st["stapling"]
        assert await stapled_status(port, pki, pki.good) == "good"


async def test_bad_signatures_and_junk_are_never_stapled_and_the_last_good_stays(
    pki: PKI,
) -> None:
    # An openssl responder signing wrongly: nothing is ever stapled.
    with OCSPResponder.for_pki(pki, extra_args=["-badsig"]):
        async with tls_server(echo, chain(pki.good, pki), ocsp_stapling="auto") as (server, port):
            assert await stapled_status(port, pki, pki.good) is None
            st = state(server, pki.good)
    assert "signature is invalid" in st["last_error"] and st["status"] is None
    assert not st["stapling"] and st["failures"] == 1

    # A good answer first, then junk from the same URL: the good one stays stapled.
    stapler = OCSPStapler(max_refresh_interval=1.0, retry_initial=0.2, retry_max=0.5)
    async with (
        stapler,
        tls_server(echo, chain(pki.good, pki), ocsp_stapling=stapler) as (
            server,
            port,
        ),
    ):
        with OCSPResponder.for_pki(pki):
            await eventually(lambda: state(server, pki.good)["stapling"], timeout=5)
        async with in_process_responder(pki) as junk:
            junk.junk = True
            await eventually(lambda: junk.answered >= 2, timeout=8)
            st = state(server, pki.good)
            assert "not an OCSP response" in st["last_error"], st
            assert st["stapling"] and st["status"] == "good"
            assert await stapled_status(port, pki, pki.good) == "good"


async def test_short_validity_is_refreshed_before_expiry_and_expires_without_a_responder(
    pki: PKI,
) -> None:
    async with (
        in_process_responder(pki, validity=4) as responder,
        tls_server(echo, chain(pki.good, pki), ocsp_stapling="auto") as (server, port),
    ):
        await eventually(lambda: state(server, pki.good)["stapling"], timeout=5)
        first = state(server, pki.good)
        assert first["fetches"] == 1
        # Refreshed at half its validity (jittered), before nextUpdate.
        assert first["next_refresh"] < first["next_update"]
        await eventually(lambda: state(server, pki.good)["fetches"] >= 2, timeout=5)
        second = state(server, pki.good)
        assert second["last_error"] is None and second["last_fetch"] < first["next_update"]
        assert second["next_update"] > first["next_update"]
        assert await stapled_status(port, pki, pki.good) == "good"
        await responder.stop()
        # The responder is gone: the last response is stapled until its nextUpdate, then not.
        until = state(server, pki.good)["next_update"]
        await eventually(lambda: not state(server, pki.good)["stapling"], timeout=8)
        assert datetime.datetime.now(UTC) >= until
        assert await stapled_status(port, pki, pki.good) is None
        st = state(server, pki.good)
        assert st["failures"] >= 1 and st["status"] == "good"  # held, but no longer valid


# =========================================================================== disk cache


async def test_a_restart_staples_from_the_disk_cache_without_asking_the_responder(
    pki: PKI, tmp_path: Path
) -> None:
    cache = tmp_path / "ocsp-cache"
    with OCSPResponder.for_pki(pki):
        async with tls_server(
            echo, chain(pki.good, pki), ocsp_stapling="auto", ocsp_cache_dir=cache
        ) as (server, port):
            await eventually(lambda: state(server, pki.good)["stapling"], timeout=5)
        async with tls_server(
            echo, chain(pki.revoked, pki), ocsp_stapling="auto", ocsp_cache_dir=cache
        ) as (server, port):
            await eventually(lambda: state(server, pki.revoked)["stapling"], timeout=5)
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        f"{fingerprint(leaf.cert)}.ocsp" for leaf in (pki.good, pki.revoked)
    )
    # The responder is gone; a new server staples the cached response on its first handshake.
    async with tls_server(
        echo, chain(pki.good, pki), ocsp_stapling="auto", ocsp_cache_dir=cache
    ) as (server, port):
        st = state(server, pki.good)
        assert st["stapling"] and st["source"] == "cache" and st["fetches"] == 0
        assert await stapled_status(port, pki, pki.good) == "good"
        assert state(server, pki.good)["fetches"] == 0  # the refresh is hours away

    # A cached response about another certificate is never stapled.
    good_file = cache / f"{fingerprint(pki.good.cert)}.ocsp"
    shutil.copyfile(cache / f"{fingerprint(pki.revoked.cert)}.ocsp", good_file)
    async with tls_server(
        echo, chain(pki.good, pki), ocsp_stapling="auto", ocsp_cache_dir=cache
    ) as (server, port):
        assert state(server, pki.good)["source"] is None
        assert await stapled_status(port, pki, pki.good) is None


# =========================================================================== Must-Staple


async def test_must_staple_refuses_status_requests_without_a_valid_staple(
    pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="aiotls")
    leaf = must_staple_leaf(pki, "must", ocsp_url=pki.ocsp_url)
    stapler = OCSPStapler(retry_initial=5, must_staple_wait=0.5)
    # No responder: a client asking for status is refused, and the server says why.
    async with (
        stapler,
        tls_server(echo, chain(leaf, pki), ocsp_stapling=stapler) as (
            server,
            port,
        ),
    ):
        with pytest.raises((aiotls.TLSError, ConnectionError)):
            await staples(port, pki)
        await eventually(lambda: "Must-Staple" in caplog.text, timeout=2)
        assert "ERR_TLS_HOOK" in caplog.text
        st = state(server, leaf)
        assert st["must_staple"] and not st["stapling"] and st["failures"] >= 1
        # A client that does not ask for status is served.
        reader, writer = await aiotls.open_connection(
            HOST, port, ca=pki.ca.cert_pem, servername="localhost"
        )
        writer.close()
    # With the responder up, the first handshake waits for the fetch and gets its staple.
    with OCSPResponder.for_pki(pki):
        async with tls_server(echo, chain(leaf, pki), ocsp_stapling="auto") as (server, port):
            assert await stapled_status(port, pki, leaf) == "good"


async def test_must_staple_ignore_serves_without_a_staple(pki: PKI) -> None:
    leaf = must_staple_leaf(pki, "must", ocsp_url=pki.ocsp_url)
    async with tls_server(
        echo, chain(leaf, pki), ocsp_stapling="auto", ocsp_must_staple="ignore"
    ) as (server, port):
        assert await stapled_status(port, pki, leaf) is None
        assert state(server, leaf)["must_staple"]


async def test_a_must_staple_certificate_that_can_never_be_stapled_is_a_config_error(
    pki: PKI,
) -> None:
    no_url = must_staple_leaf(pki, "nourl", ocsp_url=None)
    with pytest.raises(ValueError, match=r"Must-Staple.*no OCSP responder"):
        await aiotls.start_server(echo, HOST, 0, context=chain(no_url, pki), ocsp_stapling="auto")
    leaf = must_staple_leaf(pki, "must", ocsp_url=pki.ocsp_url)
    without_issuer = aiotls.create_secure_context(key=leaf.key_pem, cert=leaf.cert_pem)
    with pytest.raises(ValueError, match="issuer is unknown"):
        await aiotls.start_server(echo, HOST, 0, context=without_issuer, ocsp_stapling="auto")
    async with tls_server(
        echo, without_issuer, ocsp_stapling="auto", ocsp_must_staple="ignore"
    ) as (server, _):
        assert "issuer is unknown" in state(server, leaf)["last_error"]


# =========================================================================== server plumbing


async def test_sni_contexts_and_hot_swaps_are_stapled_and_close_stops_the_refresh(
    pki: PKI,
) -> None:
    with OCSPResponder.for_pki(pki):
        async with tls_server(echo, chain(pki.good, pki), ocsp_stapling="auto") as (server, port):
            server.add_context("revoked.localhost", chain(pki.revoked, pki))
            await eventually(
                lambda: all(s["stapling"] for s in server.ocsp_status().values()), timeout=5
            )
            assert len(server.ocsp_status()) == 2
            got = await staples(
                port, pki, servername="revoked.localhost", check_server_identity=lambda h, c: None
            )
            assert ocsp.verify(got[0], pki.revoked.cert, pki.ca.cert).status == "revoked"
            server.set_secure_context(chain(pki.revoked, pki))  # the good one is no longer served
            assert list(server.ocsp_status()) == [fingerprint(pki.revoked.cert)]
        assert server.ocsp_status()[fingerprint(pki.revoked.cert)]["next_refresh"] is None


async def test_stapling_options_are_checked_at_the_call(pki: PKI, tmp_path: Path) -> None:
    ctx = chain(pki.good, pki)
    bad: list[tuple[type[Exception], str, dict[str, Any]]] = [
        (ValueError, "ocsp_cache_dir: only with", {"ocsp_cache_dir": tmp_path}),
        (ValueError, "ocsp_must_staple: only with", {"ocsp_must_staple": "ignore"}),
        (ValueError, "one or the other",
         {"ocsp_stapling": "auto", "on_ocsp_request": lambda c, i: None}),
        (ValueError, "ocsp_stapling: expected", {"ocsp_stapling": "on"}),
        (TypeError, "ocsp_stapling: expected", {"ocsp_stapling": True}),
        (ValueError, "ocsp_must_staple", {"ocsp_stapling": "auto", "ocsp_must_staple": "yes"}),
        (TypeError, "ocsp_cache_dir", {"ocsp_stapling": "auto", "ocsp_cache_dir": 3}),
        (ValueError, "ocsp_cache_dir.*cannot use",
         {"ocsp_stapling": "auto", "ocsp_cache_dir": pki.ca.cert_path}),
        (ValueError, "only with ocsp_stapling='auto'",
         {"ocsp_stapling": OCSPStapler(), "ocsp_cache_dir": tmp_path}),
    ]  # fmt: skip
    for exc_type, message, kw in bad:
        with pytest.raises(exc_type, match=message):
            await aiotls.start_server(echo, HOST, 0, context=ctx, **kw)
    with pytest.raises(ValueError, match="retry_initial"):
        OCSPStapler(retry_initial=0)

    async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with pytest.raises(ValueError, match="'auto' needs a server"):
            await aiotls.start_tls(writer, server_side=True, context=ctx, ocsp_stapling="auto")
        writer.close()
        done.set_result(None)

    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    plain = await asyncio.start_server(upgrade, HOST, 0)
    async with plain:
        _, writer = await asyncio.open_connection(HOST, plain.sockets[0].getsockname()[1])
        await asyncio.wait_for(done, 5)
        writer.close()


async def test_a_stapler_given_to_start_tls_learns_the_certificate_at_its_first_handshake(
    pki: PKI,
) -> None:
    got: list[bytes | None] = []
    async with OCSPStapler() as stapler:

        async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await aiotls.start_tls(
                writer, server_side=True, context=chain(pki.good, pki), ocsp_stapling=stapler
            )
            writer.close()

        with OCSPResponder.for_pki(pki):
            plain = await asyncio.start_server(upgrade, HOST, 0)
            async with plain:
                reader, writer = await asyncio.open_connection(
                    HOST, plain.sockets[0].getsockname()[1]
                )
                await aiotls.start_tls(
                    writer, servername="localhost", ca=pki.ca.cert_pem,
                    request_ocsp=True, on_ocsp_response=got.append,
                )  # fmt: skip
                writer.close()
        assert list(stapler.status()) == [fingerprint(pki.good.cert)]
    assert got[0] is not None and ocsp.verify(got[0], pki.good.cert, pki.ca.cert).status == "good"
