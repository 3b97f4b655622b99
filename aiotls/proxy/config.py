"""The proxy's configuration: a TOML file (or the flags of the simple case) checked into
frozen dataclasses, so that every mistake is reported at load time, naming its place.

A file has a ``[proxy]`` table (listening address, timeouts, logs, global TLS settings)
and one ``[[route]]`` table per route (server names, certificate, backend, client
certificate policy). Paths in the file are relative to the file's folder. Durations are
seconds or a string such as ``"500ms"``, ``"10s"``, ``"5m"``, ``"12h"``, ``"1d"``;
sizes are bytes or a string such as ``"256KiB"``; ``"off"`` turns a timer off.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Address",
    "ClientAuth",
    "ProxyConfig",
    "ProxyConfigError",
    "Route",
    "load_config",
    "parse_config",
]

ClientAuthMode = Literal["none", "optional", "require"]
_MODES = ("none", "optional", "require")
_TLS_OPTIONS = ("min_version", "max_version", "ciphers", "ciphersuites", "ecdh_curve")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib)?\s*$", re.IGNORECASE)
_SIZES = {"b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1 << 20, "mb": 10**6, "mib": 1 << 20}
_HOSTNAME = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_-]+$")


class ProxyConfigError(ValueError):
    """A configuration that cannot be used; the message names the file, table and key."""


@dataclass(frozen=True, slots=True)
class Address:
    """A TCP ``host:port`` or a unix socket ``path``."""

    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = self.host or ""
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """A route's client certificate policy (ghostunnel's model).

    ``none`` asks for no certificate; ``optional`` asks, lets clients without one in,
    and holds those that send one to the same rules as ``require``: the certificate
    must verify against ``ca`` (and ``crl``), then match an allow-list when any is
    given (subject CN, SAN DNS name or SAN URI; any one match admits).
    """

    mode: ClientAuthMode = "none"
    ca: Path | None = None
    crl: Path | None = None
    allow_cn: tuple[str, ...] = ()
    allow_dns: tuple[str, ...] = ()
    allow_uri: tuple[str, ...] = ()

    @property
    def allow_lists(self) -> bool:
        return bool(self.allow_cn or self.allow_dns or self.allow_uri)


@dataclass(frozen=True, slots=True)
class Route:
    """Where connections for some server names (and ALPN protocols) go, and with which
    certificate and client policy. A route without ``sni`` is a default route."""

    name: str
    sni: tuple[str, ...]
    alpn: tuple[str, ...]
    cert: Path
    key: Path
    passphrase: str | None
    backend: Address
    proxy_protocol: bool = False
    max_connections: int | None = None
    ocsp_stapling: Literal["auto", "off"] = "off"
    client_auth: ClientAuth = field(default_factory=ClientAuth)

    @property
    def tls_settings(self) -> tuple[object, ...]:
        """What the route's context is built from: routes sharing it share a context."""
        auth = self.client_auth
        return (self.cert, self.key, self.passphrase, auth.mode, auth.ca, auth.crl)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The whole configuration; ``path`` is the file it was read from (None: flags)."""

    listen: Address
    routes: tuple[Route, ...]
    metrics: Address | None = None
    access_log: str | None = "-"
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    connect_timeout: float = 5.0
    drain_timeout: float = 30.0
    shutdown_timeout: float = 5.0
    buffer_size: int = 256 * 1024
    #: Seconds between new session ticket keys; None: 12 h where this OpenSSL can set
    #: ticket keys, else OpenSSL's own (0: never rotate).
    ticket_key_rotation: float | None = None
    watch_interval: float = 2.0
    tls: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def files(self) -> list[Path]:
        """Every file the configuration reads: watched for changes, re-read on reload."""
        files = [self.path] if self.path is not None else []
        for route in self.routes:
            auth = route.client_auth
            files += [p for p in (route.cert, route.key, auth.ca, auth.crl) if p is not None]
        return list(dict.fromkeys(files))


def load_config(path: str | os.PathLike[str]) -> ProxyConfig:
    """Read and check a TOML configuration file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ProxyConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ProxyConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_config(data, base=path.resolve().parent, source=str(path), path=path.resolve())


def parse_config(
    data: Mapping[str, Any], *, base: Path, source: str, path: Path | None = None
) -> ProxyConfig:
    """Check a configuration given as TOML's tables (the flags build the same shape)."""
    top = _Table(data, source, "")
    proxy = _Table(top.take("proxy", dict, {}), source, "[proxy]")
    route_tables = top.take("route", list, [])
    top.done()
    if not route_tables:
        raise ProxyConfigError(f"{source}: no [[route]]: the proxy needs at least one route")
    defaults = {"ocsp_stapling": proxy.take("ocsp_stapling", str, "off")}
    routes = tuple(
        _route(_Table(table, source, f"[[route]] #{i + 1}"), base, defaults)
        for i, table in enumerate(_tables(route_tables, source, "route"))
    )
    _check_routes(routes, source)
    metrics = proxy.take("metrics", str, None)
    access_log = proxy.take("access_log", (str, bool), "-")
    config = ProxyConfig(
        listen=_address(proxy, "listen", proxy.take("listen", str, "127.0.0.1:8443"), base),
        routes=routes,
        metrics=_address(proxy, "metrics", metrics, base) if metrics else None,
        access_log=_access_log(proxy, access_log, base),
        handshake_timeout=proxy.duration("handshake_timeout", 10.0),
        idle_timeout=proxy.duration("idle_timeout", 300.0),
        connect_timeout=proxy.duration("connect_timeout", 5.0, allow_off=False),
        drain_timeout=proxy.duration("drain_timeout", 30.0),
        shutdown_timeout=proxy.duration("shutdown_timeout", 5.0),
        buffer_size=proxy.size("buffer_size", 256 * 1024),
        ticket_key_rotation=proxy.duration("ticket_key_rotation", None),
        watch_interval=proxy.duration("watch", 2.0),
        tls={name: value for name in _TLS_OPTIONS if (value := proxy.take(name, str)) is not None},
        path=path,
    )
    proxy.done()
    return config


class _Table:
    """One TOML table being read: typed lookups, then :meth:`done` refuses unknown keys."""

    def __init__(self, data: object, source: str, where: str) -> None:
        if not isinstance(data, dict):
            raise ProxyConfigError(f"{source}: {where or 'the file'}: expected a table")
        self.data, self.source, self.where = data, source, where
        self.known: set[str] = set()

    def error(self, key: str, message: str) -> ProxyConfigError:
        place = f"{self.where} {key}" if self.where else key
        return ProxyConfigError(f"{self.source}: {place}: {message}")

    def take(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.known.add(key)
        value = self.data.get(key, default)
        if value is not default and not isinstance(value, kind):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            raise self.error(key, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.take(key, (list, str), [])
        items = [value] if isinstance(value, str) else value
        if not all(isinstance(item, str) and item for item in items):
            raise self.error(key, f"expected a list of non-empty strings, got {value!r}")
        return tuple(items)

    def duration(self, key: str, default: Any, *, allow_off: bool = True) -> Any:
        """Seconds from a number or "10s"-style text; 0 for "off" (when allowed)."""
        value = self.take(key, (int, float, str, bool), None)
        if value is None:
            return default
        if allow_off and (value == "off" or value is False):
            return 0.0
        match = _DURATION.match(value) if isinstance(value, str) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            seconds = float(value)
        elif match is not None:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
        else:
            off = ' or "off"' if allow_off else ""
            raise self.error(key, f'expected seconds or a duration like "10s", "5m"{off}, '
                                  f"got {value!r}")  # fmt: skip
        if seconds == 0 and not allow_off:
            raise self.error(key, "must be more than 0")
        return seconds

    def size(self, key: str, default: int) -> int:
        value = self.take(key, (int, str), None)
        if value is None:
            return default
        match = _SIZE.match(value) if isinstance(value, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        elif match is not None:
            size = int(match.group(1)) * _SIZES[(match.group(2) or "b").lower()]
        else:
            raise self.error(key, f'expected bytes or a size like "256KiB", got {value!r}')
        if size < 1024:
            raise self.error(key, f"must be at least 1024 bytes, got {size}")
        return size

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.known)
        if unknown:
            key = unknown[0]
            near = difflib.get_close_matches(key, sorted(self.known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise self.error(key, f"unknown key{hint}")


def _tables(value: list[Any], source: str, name: str) -> list[dict[str, Any]]:
    if not all(isinstance(item, dict) for item in value):
        raise ProxyConfigError(f"{source}: {name}: expected [[{name}]] tables")
    return value


def _path(table: _Table, key: str, value: str | None, base: Path) -> Path | None:
    if value is None:
        return None
    if not value:
        raise table.error(key, "expected a file name")
    return base / Path(value).expanduser()


def _address(table: _Table, key: str, text: str, base: Path) -> Address:
    """``host:port``, ``[v6]:port``, ``:port`` (every address) or ``unix:/path``."""
    if text.startswith("unix:"):
        path = _path(table, key, text[5:], base)
        assert path is not None
        return Address(path=str(path))
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or int(port) > 65535 or ("[" in host or "]" in host):
        raise table.error(key, f"expected host:port, [IPv6]:port or unix:/path, got {text!r}")
    return Address(host=host or None, port=int(port))


def _access_log(table: _Table, value: str | bool, base: Path) -> str | None:
    """ "-" for stdout, a file name, or "off" (false)."""
    if value in ("off", False, ""):
        return None
    if value is True or value == "-":
        return "-"
    assert isinstance(value, str)
    return str(_path(table, "access_log", value, base))


def _server_name(table: _Table, name: str) -> str:
    """A lowercase host name, or ``*.`` and one: the wildcard stands for one label."""
    lowered = name.lower().rstrip(".")
    if not _HOSTNAME.match(lowered):
        raise table.error(
            "sni", f"{name!r} is not a host name (a leading '*.' is the only wildcard)"
        )
    return lowered


def _route(table: _Table, base: Path, defaults: Mapping[str, str]) -> Route:
    name = table.take("name", str, None)
    sni = tuple(_server_name(table, n) for n in table.strings("sni"))
    if name is None:
        name = sni[0] if sni else "default"
    table.where = f"[[route]] {name!r}"
    alpn = table.strings("alpn")
    if any(len(p.encode()) > 255 for p in alpn):
        raise table.error("alpn", "a protocol name is at most 255 bytes")
    cert = _path(table, "cert", table.take("cert", str), base)
    key = _path(table, "key", table.take("key", str), base)
    if cert is None or key is None:
        raise table.error("cert", "a route needs cert and key (PEM files)")
    backend = table.take("backend", str)
    if backend is None:
        raise table.error("backend", "a route needs a backend: host:port or unix:/path")
    address = _address(table, "backend", backend, base)
    if address.path is None and not address.host:
        raise table.error("backend", f"a backend needs a host, got {backend!r}")
    limit = table.take("max_connections", int, None)
    if limit is not None and limit < 1:
        raise table.error("max_connections", f"must be at least 1, got {limit}")
    stapling = table.take("ocsp_stapling", str, defaults["ocsp_stapling"])
    if stapling not in ("auto", "off"):
        raise table.error("ocsp_stapling", f'expected "auto" or "off", got {stapling!r}')
    route = Route(
        name=name,
        sni=sni,
        alpn=alpn,
        cert=cert,
        key=key,
        passphrase=table.take("passphrase", str),
        backend=address,
        proxy_protocol=table.take("proxy_protocol", bool, False),
        max_connections=limit,
        ocsp_stapling=stapling,
        client_auth=_client_auth(table, base),
    )
    table.done()
    return route


def _client_auth(route: _Table, base: Path) -> ClientAuth:
    table = _Table(route.take("client_auth", dict, {}), route.source, f"{route.where} client_auth")
    mode = table.take("mode", str, "none")
    if mode not in _MODES:
        raise table.error("mode", f"expected one of {', '.join(_MODES)}; got {mode!r}")
    auth = ClientAuth(
        mode=mode,
        ca=_path(table, "ca", table.take("ca", str), base),
        crl=_path(table, "crl", table.take("crl", str), base),
        allow_cn=table.strings("allow_cn"),
        allow_dns=tuple(n.lower() for n in table.strings("allow_dns")),
        allow_uri=table.strings("allow_uri"),
    )
    table.done()
    if mode != "none" and auth.ca is None:
        raise table.error("ca", f"mode {mode!r} needs the CA that client certificates chain to")
    if mode == "none" and (auth.ca or auth.crl or auth.allow_lists):
        raise table.error("mode", 'ca, crl and allow-lists need mode "optional" or "require"')
    return auth


def _check_routes(routes: Sequence[Route], source: str) -> None:
    """Names are unique; routes that share a server name share its TLS settings (the
    certificate is chosen by name alone, ALPN only picks among their backends); once a
    route routes by ALPN every route lists its protocols (the proxy then answers every
    client's ALPN offer, and an answer must name a protocol)."""
    seen: dict[str, Route] = {}
    for route in routes:
        if route.name in seen:
            raise ProxyConfigError(f"{source}: two routes are named {route.name!r}")
        seen[route.name] = route
    by_name: dict[str, Route] = {}
    for route in routes:
        for name in route.sni or ("(default)",):
            other = by_name.setdefault(name, route)
            if other.tls_settings != route.tls_settings:
                raise ProxyConfigError(
                    f"{source}: routes {other.name!r} and {route.name!r} both serve {name} "
                    "but differ in cert, key or client_auth: routes that share a server "
                    "name share its certificate and client policy (ALPN picks the backend)"
                )
    with_alpn = [r.name for r in routes if r.alpn]
    without = [r.name for r in routes if not r.alpn]
    if with_alpn and without:
        raise ProxyConfigError(
            f"{source}: route {without[0]!r} lists no alpn while {with_alpn[0]!r} does: once "
            "a route names ALPN protocols, the proxy answers every client's ALPN offer, so "
            "each route must say which protocols it serves"
        )
