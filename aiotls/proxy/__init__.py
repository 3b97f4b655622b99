"""``aiotls proxy``: a TLS terminator (the stunnel, ghostunnel and hitch kind) built on
aiotls's public API.

It listens on TLS and forwards the plaintext to backends (TCP or unix sockets), routed
by SNI (and optionally ALPN), each route with its own certificate, client certificate
policy (CA, CRL, allow-lists by CN, SAN DNS name or URI), connection limit and an
optional PROXY protocol v2 header carrying the client's address and TLS facts. It
reloads on SIGHUP and when its files change without dropping live connections, drains
on SIGTERM, rotates session ticket keys, writes one JSON access-log line per
connection and serves Prometheus metrics.

Modules, one job each: :mod:`~aiotls.proxy.config` (the TOML file),
:mod:`~aiotls.proxy.routing` (contexts and route choice),
:mod:`~aiotls.proxy.pipe` (the forwarding of one connection),
:mod:`~aiotls.proxy.proxy_protocol` (PROXY v2 headers),
:mod:`~aiotls.proxy.metrics`, :mod:`~aiotls.proxy.accesslog`, and
:mod:`~aiotls.proxy.service` (the running proxy: reloads, drain, ticket keys).
"""

from .config import ProxyConfig, ProxyConfigError, Route, load_config, parse_config
from .service import Proxy, run_proxy, run_proxy_workers

__all__ = [
    "Proxy",
    "ProxyConfig",
    "ProxyConfigError",
    "Route",
    "load_config",
    "parse_config",
    "run_proxy",
    "run_proxy_workers",
]
