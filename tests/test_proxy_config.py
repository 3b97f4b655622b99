"""``aiotls proxy``'s configuration checks (every mistake named at load time) and its
PROXY v2 headers in the cases the end-to-end tests do not reach, read by the
proxy-protocol package."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
from proxy_util import write_config, write_identity
from proxyprotocol.result import ProxyResultIPv6, ProxyResultUnknown
from proxyprotocol.v2 import ProxyProtocolV2

from aiotls.proxy import ProxyConfigError, load_config
from aiotls.proxy.proxy_protocol import TLSFacts, encode_v2
from aiotls.proxy.routing import RouteTable

ROUTE = {"cert": "s.pem", "key": "s.key", "backend": "127.0.0.1:8080"}


def load(tmp_path: Path, proxy: dict[str, Any], *routes: dict[str, Any]) -> Any:
    return load_config(write_config(tmp_path / "p.toml", proxy, list(routes)))


def test_defaults_durations_sizes_and_paths(tmp_path):
    config = load(
        tmp_path,
        {"listen": "unix:run/p.sock", "idle_timeout": "1.5m", "handshake_timeout": 3,
         "drain_timeout": "500ms", "buffer_size": "64KiB", "ticket_key_rotation": "off",
         "min_version": "TLSv1.3", "access_log": "off"},
        {**ROUTE, "sni": ["A.Example.", "*.b.example"], "backend": "unix:app.sock"},
    )  # fmt: skip
    route = config.routes[0]
    assert config.listen.path == str(tmp_path / "run/p.sock")
    assert (config.idle_timeout, config.handshake_timeout, config.drain_timeout) == (90, 3, 0.5)
    assert (config.buffer_size, config.ticket_key_rotation) == (64 * 1024, 0)
    assert config.access_log is None and config.tls == {"min_version": "TLSv1.3"}
    assert config.watch_interval == 2 and config.connect_timeout == 5
    assert route.name == "a.example" and route.sni == ("a.example", "*.b.example")
    assert route.cert == tmp_path / "s.pem" and route.backend.path == str(tmp_path / "app.sock")
    assert config.files() == [tmp_path / "p.toml", tmp_path / "s.pem", tmp_path / "s.key"]


@pytest.mark.parametrize(
    ("proxy", "route", "message"),
    [
        (
            {"idle_timeuot": 3},
            {},
            "[proxy] idle_timeuot: unknown key (did you mean 'idle_timeout'?)",
        ),
        ({"idle_timeout": "soon"}, {}, 'expected seconds or a duration like "10s"'),
        ({"connect_timeout": "off"}, {}, "connect_timeout: expected seconds"),
        ({"buffer_size": 10}, {}, "must be at least 1024 bytes"),
        ({"listen": "localhost"}, {}, "listen: expected host:port"),
        ({}, {"backend": "app:http"}, "backend: expected host:port"),
        ({}, {"backend": ":8080"}, "a backend needs a host"),
        ({}, {"cert": None}, "a route needs cert and key"),
        ({}, {"sni": ["a..b"]}, "is not a host name"),
        ({}, {"sni": ["a.*.b"]}, "is not a host name"),
        ({}, {"ocsp_stapling": "on"}, 'expected "auto" or "off"'),
        ({}, {"max_connections": 0}, "must be at least 1"),
        ({}, {"client_auth": {"mode": "require"}}, "needs the CA"),
        ({}, {"client_auth": {"allow_cn": ["x"]}}, 'need mode "optional" or "require"'),
        ({}, {"client_auth": {"mode": "sometimes", "ca": "c"}}, "expected one of none"),
        ({}, {"proxy_protocol": "yes"}, "proxy_protocol: expected bool"),
    ],
)
def test_mistakes_are_named(tmp_path, proxy, route, message):
    route = {k: v for k, v in {**ROUTE, **route}.items() if v is not None}
    with pytest.raises(ProxyConfigError) as caught:
        load(tmp_path, proxy, route)
    assert message in str(caught.value) and str(tmp_path / "p.toml") in str(caught.value)


def test_rules_between_routes(tmp_path):
    def error(*routes: dict[str, Any]) -> str:
        with pytest.raises(ProxyConfigError) as caught:
            load(tmp_path, {}, *routes)
        return str(caught.value)

    assert "two routes are named 'x'" in error({**ROUTE, "name": "x"}, {**ROUTE, "name": "x"})
    assert "share its certificate" in error(
        {**ROUTE, "sni": ["a.test"], "alpn": ["h2"]},
        {**ROUTE, "name": "b", "sni": ["a.test"], "alpn": ["http/1.1"], "cert": "other.pem"},
    )
    assert "each route must say which protocols" in error(
        {**ROUTE, "sni": ["a.test"], "alpn": ["h2"]}, {**ROUTE}
    )
    assert "no [[route]]" in error()
    with pytest.raises(ProxyConfigError, match="not valid TOML"):
        (tmp_path / "p.toml").write_text("[proxy\n")
        load_config(tmp_path / "p.toml")


def test_unreadable_certificates_fail_when_the_routes_are_built(tmp_path, ca):
    identity = write_identity(tmp_path, ca, "localhost")
    config = load(tmp_path, {}, {**ROUTE, "cert": identity["cert"], "key": identity["cert"]})
    with pytest.raises(ProxyConfigError, match="route 'default'"):
        RouteTable(config)  # a certificate is no key
    auth = {"mode": "require", "ca": "gone.pem"}
    config = load(tmp_path, {}, {**ROUTE, **identity, "client_auth": auth})
    with pytest.raises(ProxyConfigError, match=r"client_auth\.ca: cannot read"):
        RouteTable(config)


FACTS = TLSFacts(
    version="TLSv1.2", cipher="ECDHE-ECDSA-AES128-GCM-SHA256", servername=None, alpn=None,
    client_cn="alice", client_cert=True, verified=True, resumed=True,
)  # fmt: skip


def test_proxy_v2_ipv6_and_a_resumed_session():
    header = encode_v2(("::1", 40000, 0, 0), ("::1", 8443, 0, 0), FACTS)
    result = ProxyProtocolV2().unpack(header)
    assert isinstance(result, ProxyResultIPv6)
    assert result.source == (ipaddress.IPv6Address("::1"), 40000)
    assert result.dest == (ipaddress.IPv6Address("::1"), 8443)
    ssl = result.tlv.ssl
    assert ssl.has_cert_sess and not ssl.has_cert_conn and ssl.verified
    assert (ssl.version, ssl.cipher, ssl.cn) == ("TLSv1.2", FACTS.cipher, "alice")
    assert result.tlv.authority is None and result.tlv.alpn is None


def test_proxy_v2_unix_clients_and_no_certificate():
    facts = TLSFacts(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", servername="a.test",
                     alpn="h2", client_cn=None, client_cert=False, verified=False,
                     resumed=False)  # fmt: skip
    result = ProxyProtocolV2().unpack(encode_v2("", "/run/proxy.sock", facts))
    assert isinstance(result, ProxyResultUnknown)  # UNSPEC: use the real endpoints
    header = encode_v2(("10.0.0.1", 1, 0), ("::1", 2, 0, 0), facts)  # mixed: UNSPEC too
    assert header[13] == 0x00


def test_the_readme_sample_configuration_loads(tmp_path):
    """The README's sample is a configuration the proxy accepts, as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## aiotls proxy", 1)[1].split("\n## ", 1)[0]
    (sample,) = re.findall(r"```toml\n(.*?)```", section, re.S)
    (tmp_path / "proxy.toml").write_text(sample)
    config = load_config(tmp_path / "proxy.toml")
    assert [r.name for r in config.routes] == ["api", "default"]
    assert config.routes[0].client_auth.allow_uri == ("spiffe://example.com/web",)
