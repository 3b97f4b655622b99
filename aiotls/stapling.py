"""Automatic OCSP stapling: fetch, verify, cache and refresh each certificate's OCSP response.

What nginx's ``ssl_stapling`` and Caddy do, inside the server's event loop: for each
certificate a server serves, an :class:`OCSPStapler` asks the OCSP responder named in
the certificate (its AIA extension) in the background with :func:`aiotls.ocsp.fetch`,
checks the answer with :func:`aiotls.ocsp.verify` (signed by the issuer or a delegated
responder, about this certificate, thisUpdate/nextUpdate current) and staples it
through the server's ``on_ocsp_request`` hook::

    server = await aiotls.start_server(handle, host, port, key=..., cert=chain,
                                       ocsp_stapling="auto", ocsp_cache_dir="/var/cache/ocsp")
    server.ocsp_status()    # per certificate: status, thisUpdate, nextUpdate, errors, ...

Policy:

- A response is refreshed at half its validity (jittered, at most every
  ``max_refresh_interval`` seconds apart); a failed fetch is retried with jittered
  exponential backoff (``retry_initial`` doubling up to ``retry_max``).
- Only a verified ``good`` or ``revoked`` response is stapled (a verified revoked
  response is the CA's signed word: clients then refuse the certificate). An
  ``unknown`` answer, garbage, a response for another certificate, a bad signature or
  an expired response is never stapled; the last good one is kept while it is valid.
- A response without nextUpdate counts as valid for :data:`ASSUMED_VALIDITY`.
- With ``cache_dir`` each verified response is written to disk (``<sha256 of the
  certificate>.ocsp``) and read back, verified again, when a certificate is added, so
  a restarted server staples at once, before any fetch.
- A handshake never waits for a refresh. While a certificate's first fetch is in flight
  and nothing is cached, a handshake waits for it at most ``first_fetch_wait`` seconds,
  then staples nothing.
- Must-Staple certificates (the TLS Feature extension with status_request, RFC 7633):
  with ``must_staple="enforce"`` (the default) a handshake that asks for status and
  would get no valid staple waits for a fetch in flight at most ``must_staple_wait``
  seconds, then is refused (the hook raises, so the handshake fails with
  ``ERR_TLS_HOOK`` and is logged or reported to ``on_tls_client_error``): a client
  that honours Must-Staple would refuse it anyway. Clients that do not ask for status
  are served. Such a certificate with no OCSP URL or no known issuer can never be
  stapled: adding it raises ValueError. ``must_staple="ignore"`` treats it as any other.

The stapler belongs to one event loop. ``ocsp_stapling="auto"`` on
:func:`aiotls.start_server` / :func:`aiotls.create_server` makes one that the server
owns (started with it, stopped by ``server.close()``); an :class:`OCSPStapler` given as
``ocsp_stapling=`` is the caller's to close (``async with`` or :meth:`OCSPStapler.close`
and :meth:`OCSPStapler.wait_closed`) and may serve several servers. Used alone it is
an ``on_ocsp_request`` hook: certificates it has not been given are added at their
first handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypedDict, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from . import ocsp
from .context import SecureContext

__all__ = ["ASSUMED_VALIDITY", "MustStaple", "OCSPStapler", "StapleState"]

log = logging.getLogger("aiotls")

#: How long a response without nextUpdate is stapled after its thisUpdate.
ASSUMED_VALIDITY = datetime.timedelta(hours=1)
#: A refresh never comes sooner than this (or ``max_refresh_interval``) after a fetch,
#: unless the response expires first (then at half its remaining time, but not within
#: a second): a responder serving responses already past their half-life is not asked
#: in a loop.
_MIN_REFRESH = 60.0
_FLOOR = 1.0

MustStaple = Literal["enforce", "ignore"]
Source = Literal["responder", "cache"]


class StapleState(TypedDict):
    """One certificate's stapling state, as :meth:`OCSPStapler.status` reports it.

    Times are timezone-aware UTC datetimes. ``status``, ``this_update`` and
    ``next_update`` describe the response held (None: none yet); ``stapling`` says
    whether it is valid now, so handshakes get it.
    """

    subject: str
    serial: str
    url: str | None
    must_staple: bool
    status: ocsp.CertStatus | None
    this_update: datetime.datetime | None
    next_update: datetime.datetime | None
    source: Source | None
    stapling: bool
    last_fetch: datetime.datetime | None
    last_error: str | None
    next_refresh: datetime.datetime | None
    fetches: int
    failures: int


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _serial_hex(serial: int) -> str:
    """The serial number as Node's serialNumber shows it: upper-case hex, whole bytes."""
    text = f"{serial:X}"
    return "0" + text if len(text) % 2 else text


def _must_staple(cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries the TLS Feature extension asking for status_request."""
    try:
        features = cert.extensions.get_extension_for_class(x509.TLSFeature).value
    except x509.ExtensionNotFound:
        return False
    return x509.TLSFeatureType.status_request in features


def _is_leaf(cert: x509.Certificate) -> bool:
    try:
        return not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return True


def _issuer_of(
    cert: x509.Certificate, candidates: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    """The candidate that signed ``cert`` (by name and signature), or None."""
    for candidate in candidates:
        if candidate.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


@dataclass(eq=False)
class _Entry:
    """One certificate: what it is, the verified response held, and its refresh task."""

    cert: x509.Certificate
    issuer: x509.Certificate | None
    fingerprint: str
    url: str | None
    must_staple: bool
    der: bytes | None = None
    verified: ocsp.OCSPStatus | None = None
    source: Source | None = None
    last_fetch: datetime.datetime | None = None
    last_error: str | None = None
    next_refresh: datetime.datetime | None = None
    fetches: int = 0
    failures: int = 0
    contexts: int = 0  # how many added contexts hold it (0: first seen in a handshake)
    task: asyncio.Task[None] | None = None
    #: Set while no fetch is in flight; handshakes that must wait for one wait on it.
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.cert.subject.rfc4514_string()

    def valid_until(self) -> datetime.datetime | None:
        if self.verified is None:
            return None
        return self.verified.next_update or self.verified.this_update + ASSUMED_VALIDITY

    def staple(self, now: datetime.datetime) -> bytes | None:
        """The response to staple at ``now``: the one held while it is valid."""
        until = self.valid_until()
        return self.der if until is not None and now < until else None


class OCSPStapler:
    """Keeps a verified OCSP response for each certificate and staples it.

    Call it as a server's ``on_ocsp_request`` hook (or give it as ``ocsp_stapling=``);
    :meth:`add_context` starts the background work for a context's certificates;
    :meth:`status` reports it. Every argument is checked here: a bad one raises
    TypeError or ValueError naming it.
    """

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        must_staple: MustStaple = "enforce",
        max_refresh_interval: float = 3600.0,
        retry_initial: float = 5.0,
        retry_max: float = 300.0,
        fetch_timeout: float = 10.0,
        first_fetch_wait: float = 1.0,
        must_staple_wait: float = 5.0,
    ) -> None:
        if must_staple not in get_args(MustStaple):
            raise (ValueError if isinstance(must_staple, str) else TypeError)(
                f"ocsp_must_staple (must_staple): expected 'enforce' or 'ignore', "
                f"got {must_staple!r}"
            )
        for name, value in (
            ("max_refresh_interval", max_refresh_interval),
            ("retry_initial", retry_initial),
            ("retry_max", retry_max),
            ("fetch_timeout", fetch_timeout),
            ("first_fetch_wait", first_fetch_wait),
            ("must_staple_wait", must_staple_wait),
        ):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError(f"{name}: expected seconds as a number, got {type(value).__name__}")
            if not value > 0:
                raise ValueError(f"{name}: must be > 0 seconds, got {value!r}")
        self._cache_dir = self._make_cache_dir(cache_dir)
        self._must_staple: MustStaple = must_staple
        self._max_refresh = float(max_refresh_interval)
        self._retry_initial = float(retry_initial)
        self._retry_max = float(max(retry_max, retry_initial))
        self._fetch_timeout = float(fetch_timeout)
        self._first_fetch_wait = float(first_fetch_wait)
        self._must_staple_wait = float(must_staple_wait)
        self._entries: dict[str, _Entry] = {}
        self._retired: set[asyncio.Task[None]] = set()  # cancelled, for wait_closed
        self._closed = False

    @staticmethod
    def _make_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path | None:
        """The cache directory, created if missing; ValueError if it cannot be."""
        if cache_dir is None:
            return None
        if not isinstance(cache_dir, str | os.PathLike):
            raise TypeError(
                "ocsp_cache_dir (cache_dir): expected a path (str or os.PathLike), "
                f"got {type(cache_dir).__name__}"
            )
        path = Path(cache_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"ocsp_cache_dir (cache_dir): cannot use {str(path)!r}: {exc.strerror}"
            ) from None
        return path

    # -- registration --------------------------------------------------------------

    def add_context(self, context: SecureContext) -> None:
        """Staple for the certificates ``context`` serves; starts their first fetch.

        Call it in the event loop. A certificate already known (from another context)
        is shared, not fetched twice. Raises ValueError, changing nothing, for an
        enforced Must-Staple certificate that can never be stapled (no OCSP URL, or
        its issuer is in neither the chain nor ``ca``).
        """
        if not isinstance(context, SecureContext):
            raise TypeError(f"add_context: expected a SecureContext, got {type(context).__name__}")
        if self._closed:
            raise RuntimeError("add_context: the OCSP stapler is closed")
        loop = asyncio.get_running_loop()
        known = context.certificates + context.ca_certs
        leaves = [c for c in context.certificates if _is_leaf(c)]
        issuers = {id(leaf): _issuer_of(leaf, known) for leaf in leaves}
        for leaf in leaves:
            self._check_enforceable(leaf, issuers[id(leaf)])
        for leaf in leaves:
            entry = self._entry(leaf, issuers[id(leaf)], loop)
            entry.contexts += 1

    def discard_context(self, context: SecureContext) -> None:
        """Undo one :meth:`add_context`: certificates no added context holds any longer
        stop being refreshed and leave :meth:`status` (a server's hot swap calls it)."""
        for leaf in filter(_is_leaf, context.certificates):
            entry = self._entries.get(self._fingerprint(leaf))
            if entry is None or entry.contexts == 0:
                continue
            entry.contexts -= 1
            if entry.contexts == 0:
                del self._entries[entry.fingerprint]
                if entry.task is not None:
                    entry.task.cancel()
                    self._retired.add(entry.task)
                    entry.task.add_done_callback(self._retired.discard)

    def _check_enforceable(self, cert: x509.Certificate, issuer: x509.Certificate | None) -> None:
        if self._must_staple != "enforce" or not _must_staple(cert):
            return
        problem = self._unfetchable(cert, issuer)
        if problem is not None:
            raise ValueError(
                f"ocsp_must_staple: the certificate {cert.subject.rfc4514_string()!r} is "
                f"Must-Staple but can never be stapled: {problem} "
                "(pass ocsp_must_staple='ignore' to serve it without a staple)"
            )

    @staticmethod
    def _unfetchable(cert: x509.Certificate, issuer: x509.Certificate | None) -> str | None:
        """Why no OCSP response can be fetched for ``cert``, or None."""
        if not ocsp.responder_urls(cert):
            return "it names no OCSP responder (no AIA OCSP URL)"
        if issuer is None:
            return "its issuer is unknown (put it in the cert chain or in ca)"
        return None

    @staticmethod
    def _fingerprint(cert: x509.Certificate) -> str:
        return cert.fingerprint(hashes.SHA256()).hex()

    def _entry(
        self,
        cert: x509.Certificate,
        issuer: x509.Certificate | None,
        loop: asyncio.AbstractEventLoop,
    ) -> _Entry:
        """The entry of ``cert``, made (cache read, refresh task started) if new."""
        fingerprint = self._fingerprint(cert)
        entry = self._entries.get(fingerprint)
        if entry is not None:
            if entry.issuer is None and issuer is not None:  # learnt it now: start
                entry.issuer = issuer
                self._start(entry, loop)
            return entry
        urls = ocsp.responder_urls(cert)
        entry = _Entry(
            cert=cert,
            issuer=issuer,
            fingerprint=fingerprint,
            url=urls[0] if urls else None,
            must_staple=_must_staple(cert),
        )
        self._entries[fingerprint] = entry
        self._start(entry, loop)
        return entry

    def _start(self, entry: _Entry, loop: asyncio.AbstractEventLoop) -> None:
        """Read the disk cache, then run the refresh task (if a fetch can be made)."""
        entry.idle.set()
        problem = self._unfetchable(entry.cert, entry.issuer)
        if problem is not None:
            entry.last_error = problem
            log.warning("OCSP stapling off for %r: %s", entry.name, problem)
            return
        self._load_cache(entry)
        now = _now()
        if entry.staple(now) is None:
            entry.next_refresh = now
            entry.idle.clear()  # the first fetch starts at once: handshakes may wait for it
        else:
            entry.next_refresh = now + datetime.timedelta(seconds=self._refresh_delay(entry, now))
        entry.task = loop.create_task(self._refresh_loop(entry))

    # -- the hook ------------------------------------------------------------------

    async def __call__(
        self, certificate: x509.Certificate, issuer: x509.Certificate | None
    ) -> bytes | None:
        """``on_ocsp_request``: the verified response to staple for ``certificate``, or None.

        Raises :class:`aiotls.ocsp.OCSPError` to refuse the handshake of an enforced
        Must-Staple certificate that has no valid response.
        """
        entry = self._entries.get(self._fingerprint(certificate))
        if entry is None or (entry.issuer is None and issuer is not None):
            if self._closed:
                return None
            entry = self._entry(certificate, issuer, asyncio.get_running_loop())
        enforce = entry.must_staple and self._must_staple == "enforce"
        response = entry.staple(_now())
        if response is None and not entry.idle.is_set() and (enforce or entry.fetches == 0):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(
                    self._must_staple_wait if enforce else self._first_fetch_wait
                ):
                    await entry.idle.wait()
            response = entry.staple(_now())
        if response is None and enforce:
            raise ocsp.OCSPError(
                f"refusing the handshake: the certificate {entry.name!r} is Must-Staple and "
                f"there is no valid OCSP response to staple ({entry.last_error or 'none yet'})"
            )
        return response

    # -- background work -------------------------------------------------------------

    async def _refresh_loop(self, entry: _Entry) -> None:
        """Fetch when due, forever: at half validity after a success, with backoff after
        failures. Cancelled by :meth:`close` or :meth:`discard_context`."""
        streak = 0
        while True:
            assert entry.next_refresh is not None
            delay = (entry.next_refresh - _now()).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
            entry.idle.clear()
            try:
                await self._fetch(entry)
            except Exception as exc:
                streak += 1
                entry.fetches += 1
                entry.failures += 1
                entry.last_fetch = _now()
                entry.last_error = str(exc) or type(exc).__name__
                backoff = min(self._retry_max, self._retry_initial * 2 ** (streak - 1))
                backoff *= random.uniform(0.5, 1.0)
                entry.next_refresh = _now() + datetime.timedelta(seconds=backoff)
                held = entry.staple(_now())
                until = entry.valid_until()
                log.warning(
                    "OCSP response for %r not renewed: %s; retrying in %.3g s, %s",
                    entry.name,
                    entry.last_error,
                    backoff,
                    f"stapling the last good one until {until:%Y-%m-%d %H:%M:%S} UTC"
                    if held is not None and until is not None
                    else "nothing to staple meanwhile",
                    exc_info=None if isinstance(exc, ocsp.OCSPError | ValueError) else exc,
                )
            else:
                streak = 0
                entry.fetches += 1
                entry.last_error = None
                now = entry.last_fetch = _now()
                entry.next_refresh = now + datetime.timedelta(
                    seconds=self._refresh_delay(entry, now)
                )
            finally:
                entry.idle.set()

    async def _fetch(self, entry: _Entry) -> None:
        """Fetch, verify and adopt a new response; raises what went wrong."""
        assert entry.issuer is not None
        der = await ocsp.fetch(entry.cert, entry.issuer, timeout=self._fetch_timeout)
        status = self._verified(entry, der)
        if entry.verified is not None and status.this_update < entry.verified.this_update:
            raise ocsp.OCSPError(
                f"the responder answered with a response older than the one held "
                f"(thisUpdate {status.this_update:%Y-%m-%d %H:%M:%S} UTC)"
            )
        entry.der, entry.verified, entry.source = der, status, "responder"
        if status.status == "revoked":
            log.warning("OCSP: the certificate %r is revoked (stapling that)", entry.name)
        if self._cache_dir is not None:
            await asyncio.to_thread(self._write_cache, entry, der)

    @staticmethod
    def _verified(entry: _Entry, der: bytes) -> ocsp.OCSPStatus:
        """:func:`aiotls.ocsp.verify`, and a status worth stapling (good or revoked)."""
        assert entry.issuer is not None
        status = ocsp.verify(der, entry.cert, entry.issuer)
        if status.status == "unknown":
            raise ocsp.OCSPError("the responder does not know the certificate (status unknown)")
        return status

    def _refresh_delay(self, entry: _Entry, now: datetime.datetime) -> float:
        """Seconds until the held response's refresh: at half its validity (jittered),
        no later than ``max_refresh_interval``, not sooner than the floor above."""
        assert entry.verified is not None
        until = entry.valid_until()
        assert until is not None
        this_update = entry.verified.this_update
        half = (until - this_update).total_seconds() / 2
        target = (this_update - now).total_seconds() + half * random.uniform(0.8, 1.0)
        target = min(target, self._max_refresh * random.uniform(0.9, 1.0))
        remaining = (until - now).total_seconds()
        return max(target, _FLOOR, min(_MIN_REFRESH, self._max_refresh, remaining / 2))

    # -- disk cache --------------------------------------------------------------------

    def _cache_path(self, entry: _Entry) -> Path:
        assert self._cache_dir is not None
        return self._cache_dir / f"{entry.fingerprint}.ocsp"

    def _load_cache(self, entry: _Entry) -> None:
        """Adopt the cached response if it still verifies for this certificate now."""
        if self._cache_dir is None:
            return
        path = self._cache_path(entry)
        try:
            with open(path, "rb") as f:
                der = f.read(ocsp.MAX_RESPONSE_SIZE + 1)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("OCSP cache %s unreadable: %s", path, exc)
            return
        try:
            if len(der) > ocsp.MAX_RESPONSE_SIZE:
                raise ocsp.OCSPError("too large")
            status = self._verified(entry, der)
        except ocsp.OCSPError as exc:
            log.info("OCSP cache %s not used: %s", path, exc)
            return
        entry.der, entry.verified, entry.source = der, status, "cache"

    def _write_cache(self, entry: _Entry, der: bytes) -> None:
        """Write ``der`` to the cache atomically (a temporary file renamed over the old)."""
        path = self._cache_path(entry)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_bytes(der)
            os.replace(temporary, path)
        except OSError as exc:
            log.warning("OCSP cache %s not written: %s", path, exc)
            with contextlib.suppress(OSError):
                temporary.unlink()

    # -- state and lifetime --------------------------------------------------------------

    def status(self) -> dict[str, StapleState]:
        """Each certificate's :class:`StapleState`, keyed by its SHA-256 fingerprint
        (lower-case hex, as ``cert.fingerprint(SHA256()).hex()``)."""
        now = _now()
        return {
            fingerprint: StapleState(
                subject=entry.name,
                serial=_serial_hex(entry.cert.serial_number),
                url=entry.url,
                must_staple=entry.must_staple,
                status=entry.verified.status if entry.verified else None,
                this_update=entry.verified.this_update if entry.verified else None,
                next_update=entry.verified.next_update if entry.verified else None,
                source=entry.source,
                stapling=entry.staple(now) is not None,
                last_fetch=entry.last_fetch,
                last_error=entry.last_error,
                next_refresh=entry.next_refresh if entry.task is not None else None,
                fetches=entry.fetches,
                failures=entry.failures,
            )
            for fingerprint, entry in self._entries.items()
        }

    def close(self) -> None:
        """Stop every refresh; responses held are still stapled while valid."""
        self._closed = True
        for entry in self._entries.values():
            if entry.task is not None:
                entry.task.cancel()

    async def wait_closed(self) -> None:
        """Return once the refresh tasks stopped by :meth:`close` have ended."""
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        await asyncio.gather(*tasks, *self._retired, return_exceptions=True)
        for entry in self._entries.values():
            entry.task = None

    async def __aenter__(self) -> OCSPStapler:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()
