"""Routing: one generation of the configuration turned into SecureContexts and the rules
that pick a route for a connection by its server name (SNI) and ALPN protocol.

Names match most specific first: an exact name, then ``*.parent`` (one label), then
the default routes (those without ``sni``). Among the routes of that level, ALPN picks:
the first route (in file order) serving a protocol the client offers, with the route's
own preference; a client that offers no ALPN gets the level's first route. The
certificate and client policy follow the name alone (the configuration guarantees that
routes sharing a name share them), because the ``sni_callback`` that chooses the
context is asked before ALPN is settled.

Every route context gets a ``session_id_context`` derived from its client policy (mode,
CA and CRL contents): OpenSSL resumes a session only where it was made under the same
policy, so a session verified against one CA never lets a client into a route that
trusts another. Sessions are checked against the listening context (aiotls switches the
context at certificate selection, after the resumption decision), so they resume on
routes whose policy is the listening (default) route's; the others do full handshakes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..context import SecureContext, create_secure_context
from ..errors import TLSError
from .config import ProxyConfig, ProxyConfigError, Route

__all__ = ["NoRoute", "RouteTable", "client_cn", "refusal"]


class NoRoute(LookupError):
    """No route serves this server name (and there is no default route)."""


def _read(route: Route, option: str, path: Any) -> bytes:
    try:
        return bytes(path.read_bytes())
    except OSError as exc:
        raise ProxyConfigError(
            f"route {route.name!r}: {option}: cannot read {path}: {exc.strerror or exc}"
        ) from None


def _build_context(route: Route, tls: Any) -> SecureContext:
    """The route's context: its certificate, the global TLS settings, its client policy."""
    auth = route.client_auth
    options: dict[str, Any] = dict(tls)
    options["cert"] = _read(route, "cert", route.cert)
    options["key"] = _read(route, "key", route.key)
    if route.passphrase is not None:
        options["passphrase"] = route.passphrase
    policy = hashlib.sha256(b"aiotls proxy client policy\0" + auth.mode.encode())
    if auth.mode != "none":
        options["request_cert"] = True
        options["reject_unauthorized"] = auth.mode == "require"
        options["ca"] = _read(route, "client_auth.ca", auth.ca)
        policy.update(b"\0ca\0" + options["ca"])
        if auth.crl is not None:
            options["crl"] = _read(route, "client_auth.crl", auth.crl)
            policy.update(b"\0crl\0" + options["crl"])
    options["session_id_context"] = policy.digest()
    try:
        return create_secure_context(**options)
    except (TLSError, TypeError, ValueError) as exc:
        raise ProxyConfigError(f"route {route.name!r}: {exc}") from exc


class RouteTable:
    """The routes of one configuration generation and the contexts they use."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self._contexts: dict[tuple[object, ...], SecureContext] = {}
        self._exact: dict[str, list[Route]] = {}
        self._wildcard: dict[str, list[Route]] = {}
        self._default: list[Route] = []
        for route in config.routes:
            settings = route.tls_settings
            if settings not in self._contexts:
                self._contexts[settings] = _build_context(route, config.tls)
            for name in route.sni:
                if name.startswith("*."):
                    self._wildcard.setdefault(name[2:], []).append(route)
                else:
                    self._exact.setdefault(name, []).append(route)
            if not route.sni:
                self._default.append(route)
        self._ids = {id(ctx) for ctx in self._contexts.values()}
        #: Whether ALPN routes: the server then answers ALPN with :meth:`select_alpn`.
        self.uses_alpn = any(route.alpn for route in config.routes)
        first = self._default[0] if self._default else config.routes[0]
        #: The context a server starts each handshake with (and resumes sessions under).
        self.listening_context = self.context_of(first)

    def context_of(self, route: Route) -> SecureContext:
        return self._contexts[route.tls_settings]

    def owns(self, context: SecureContext) -> bool:
        """Whether ``context`` is one of this generation's."""
        return id(context) in self._ids

    def candidates(self, servername: str | None) -> Sequence[Route]:
        """The routes of the most specific level matching ``servername``."""
        if servername:
            name = servername.lower().rstrip(".")
            if name in self._exact:
                return self._exact[name]
            parent = name.partition(".")[2]
            if parent in self._wildcard:
                return self._wildcard[parent]
        return self._default

    def sni_callback(self, servername: str | None) -> SecureContext:
        """The ``sni_callback``: the context of the routes serving this name."""
        routes = self.candidates(servername)
        if not routes:
            raise NoRoute(f"no route serves {servername or 'clients without SNI'}")
        return self.context_of(routes[0])

    def select_alpn(self, offered: list[str], servername: str | None) -> str | None:
        """The ALPN selector: the first route serving an offered protocol decides."""
        for route in self.candidates(servername):
            for protocol in route.alpn:
                if protocol in offered:
                    return protocol
        return None

    def route_for(self, servername: str | None, alpn: str | None) -> Route | None:
        """The route of an established connection (as the two hooks above chose it)."""
        routes = self.candidates(servername)
        for route in routes:
            if alpn in route.alpn:
                return route
        return routes[0] if routes else None

    @property
    def contexts(self) -> list[SecureContext]:
        return list(self._contexts.values())


def _policy(context: SecureContext) -> object:
    return context.options.get("session_id_context")


def client_cn(cert: x509.Certificate | None) -> str | None:
    """The subject CN of a client certificate, if it has one."""
    if cert is None:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def refusal(
    route: Route, used: SecureContext, route_context: SecureContext, tls: Any
) -> str | None:
    """Why ``route``'s client policy refuses this established connection, or None.

    ``tls`` is ``get_extra_info("tls")``; ``used`` the context the handshake ended on
    (the listening one when a session was resumed).
    """
    if _policy(used) != _policy(route_context):
        return "session made under another client certificate policy"
    auth = route.client_auth
    if auth.mode == "none":
        return None
    cert = tls.get_peer_x509_certificate()
    if cert is None:
        return None if auth.mode == "optional" else "no client certificate"
    if not tls.authorized:
        return f"client certificate not verified: {tls.authorization_error}"
    if not auth.allow_lists:
        return None
    if client_cn(cert) in auth.allow_cn:
        return None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        if {n.lower() for n in san.get_values_for_type(x509.DNSName)} & set(auth.allow_dns):
            return None
        if set(san.get_values_for_type(x509.UniformResourceIdentifier)) & set(auth.allow_uri):
            return None
    return "client certificate not on the route's allow-lists"
