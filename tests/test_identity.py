"""check_server_identity against node's own tls.checkServerIdentity, case by case.

Verdicts, messages and reasons must be identical. Intended differences: the error's ``host``
is the hostname as given (node drops one trailing dot), and a malformed quoted altname raises
TLSCertificateError with code ERR_TLS_CERT_ALTNAME_FORMAT where node throws a SyntaxError.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotls.certinfo import check_server_identity
from aiotls.errors import TLSCertificateError

SCRIPT = Path(__file__).parent / "node" / "check_identity.js"
_IPS = (
    "IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:2, IP Address:FE80:0:0:0:0:0:ABCD:1, "
    "IP Address:0:0:0:0:0:FFFF:102:304, IP Address:0:0:0:0:0:0:102:304, "
    "IP Address:1:0:0:2:0:0:0:3, IP Address:0:0:0:0:0:0:0:0, IP Address:1:0:0:0:0:0:0:0"
)


def san(names: str, **subject: Any) -> dict[str, Any]:
    return {"subjectaltname": names, **({"subject": subject} if subject else {})}


def cn(value: Any) -> dict[str, Any]:
    return {"subject": {"CN": value}}


# (hostname, certificate dict, whether it matches)
CASES: list[tuple[str, dict[str, Any], bool]] = [
    # plain names, case, trailing dots
    ("a.com", san("DNS:a.com"), True),
    ("A.COM", san("DNS:a.com"), True),
    ("a.com", san("DNS:A.Com"), True),
    ("a.com.", san("DNS:a.com"), True),
    ("a.com", san("DNS:a.com."), True),
    ("a.com..", san("DNS:a.com"), True),  # one dot goes from the host, one from its labels
    ("b.com", san("DNS:a.com, DNS:b.com"), True),
    ("a.com", san("DNS:a.com,DNS:b.com"), False),  # not ", "-separated: one odd name
    ("", san("DNS:a.com"), False),
    ("a.com", san("DNS:"), False),
    ("a..com", san("DNS:a..com"), False),
    ("a b.com", san("DNS:a b.com"), False),
    ("localhost", san("DNS:localhost"), True),
    # wildcards
    ("b.a.com", san("DNS:*.a.com"), True),
    ("B.A.COM", san("DNS:*.a.com"), True),
    ("a.com", san("DNS:*.a.com"), False),
    ("c.b.a.com", san("DNS:*.a.com"), False),
    ("sub.a.com", san("DNS:*.a.com."), True),
    ("*.a.com", san("DNS:*.a.com"), True),
    ("x.com", san("DNS:*.com"), False),
    ("x", san("DNS:*"), False),
    ("a.b", san("DNS:*.b"), False),
    ("a.b.a.com", san("DNS:a.*.a.com"), False),
    ("foo.bar.a.com", san("DNS:foo.*.a.com"), False),
    # partial wildcards
    ("bar.a.com", san("DNS:b*.a.com"), True),
    ("b.a.com", san("DNS:b*.a.com"), True),
    ("foo.a.com", san("DNS:b*.a.com"), False),
    ("bxr.a.com", san("DNS:b*r.a.com"), True),
    ("br.a.com", san("DNS:b*r.a.com"), True),
    ("bar.a.com", san("DNS:*r.a.com"), True),
    ("bar.a.com", san("DNS:*z.a.com"), False),
    ("ab.a.com", san("DNS:**.a.com"), False),
    ("abc.a.com", san("DNS:a*b*.a.com"), False),
    ("aba.a.com", san("DNS:ab*ba.a.com"), False),
    # IDNA: A-labels never take wildcards, U-labels in patterns never match
    ("xn--abc.a.com", san("DNS:xn--*.a.com"), False),
    ("xn--*.a.com", san("DNS:xn--*.a.com"), True),
    ("xn--bcher-kva.example", san("DNS:xn--bcher-kva.example"), True),
    ("xn--bcher-kva.a.com", san("DNS:*.a.com"), True),
    ("bücher.example", san("DNS:bücher.example"), False),
    ("bücher.a.com", san("DNS:*.a.com"), True),
    ("BÜCHER.a.com", san("DNS:*.A.COM"), True),
    # CN only without DNS altnames; URI and email altnames are not DNS names
    ("a.com", san("URI:http://a.com, email:a@a.com"), False),
    ("a.com", san("URI:http://a.com", CN="a.com"), True),
    ("a.com", san("DNS:b.com", CN="a.com"), False),
    ("a.com", san("", CN="a.com"), True),
    ("a.com", cn("a.com"), True),
    ("b.a.com", cn("*.a.com"), True),
    ("a.com.", cn("A.COM."), True),
    ("a.com", cn(["x.com", "a.com"]), True),
    ("a.com", cn(["x.com", "y.com"]), False),
    ("a.com", cn([]), False),
    ("a.com", cn(""), False),
    ("a.com", {}, False),
    ("a.com", {"subject": None}, False),
    ("a.com", san("IP Address:1.2.3.4"), False),
    # IP addresses only against IP altnames, in canonical form
    ("127.0.0.1", san("IP Address:127.0.0.1"), True),
    ("127.0.0.1.", san("IP Address:127.0.0.1"), True),
    ("127.0.0.1", cn("127.0.0.1"), False),
    ("127.0.0.1", san("DNS:127.0.0.1"), False),
    ("1.2.3.4", {}, False),
    ("1.2.3.4", san("IP Address:1.2.3.4, DNS:x.com"), True),
    ("1.2.3.4", san("IP Address:1.2.3.04"), False),
    ("01.2.3.4", san("IP Address:1.2.3.4"), False),
    ("::1", san("IP Address:0:0:0:0:0:0:0:1"), True),
    ("0:0:0:0:0:0:0:1", san("IP Address:0:0:0:0:0:0:0:1"), True),
    ("[::1]", san("IP Address:0:0:0:0:0:0:0:1"), False),
    ("::1", san(_IPS), False),
    ("1.2.3.4", san(_IPS), False),
    ("::ffff:1.2.3.4", san(_IPS), True),
    ("::1.2.3.4", san(_IPS), True),
    ("1:0:0:2::3", san(_IPS), True),
    ("1::", san(_IPS), True),
    ("::", san(_IPS), True),
    ("FE80::ABCD:1", san(_IPS), True),
    ("fe80::abcd:1%eth0", san(_IPS), True),
    ("2001:db8::1", san("IP Address:2001:DB8:0:0:0:0:0:1"), True),
    # JSON-escaped altnames (node quotes names holding commas, quotes, controls)
    ("x.com", san('DNS:"x.com"'), True),
    ("a,b.com", san('DNS:"a\\u002cb.com"'), True),
    ("a.com", san('DNS:x.com, URI:"http://a\\u002cb", DNS:a.com'), True),
    ("a.com", san('DNS:"a.com'), False),
]


def _unfqdn(host: str) -> str:
    return host[:-1] if host.endswith(".") else host


def verdict(host: str, cert: dict[str, Any]) -> dict[str, Any]:
    try:
        check_server_identity(host, cert)
    except TLSCertificateError as exc:
        assert exc.cert is cert
        return {"ok": False, "code": exc.code, "message": str(exc), "reason": exc.reason,
                "host": exc.host}  # fmt: skip
    return {"ok": True}


def node_verdicts(cases: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One node process answers the whole list."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    out = subprocess.run(
        ["node", str(SCRIPT)],
        input=json.dumps(cases).encode(),
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    result: list[dict[str, Any]] = json.loads(out)
    return result


def assert_same(host: str, ours: dict[str, Any], node: dict[str, Any]) -> None:
    if node.get("code") == "ERR_TLS_CERT_ALTNAME_INVALID":
        # Intended difference: ``host`` is the name as given; node drops one trailing dot.
        assert node["host"] == _unfqdn(host)
        node = {**node, "host": host}
    elif node.get("code") == "ERR_TLS_CERT_ALTNAME_FORMAT":  # node throws it, with no reason
        node = {**node, "reason": node["message"], "host": host}
    assert ours == node, host


@pytest.fixture(scope="module")
def node_table() -> list[dict[str, Any]]:
    return node_verdicts([(host, cert) for host, cert, _ in CASES])


@pytest.mark.parametrize(("host", "cert", "ok"), CASES)
def test_table(host: str, cert: dict[str, Any], ok: bool) -> None:
    assert verdict(host, cert)["ok"] is ok


@pytest.mark.parametrize("index", range(len(CASES)), ids=[repr(c[0]) for c in CASES])
def test_table_matches_node(index: int, node_table: list[dict[str, Any]]) -> None:
    host, cert, ok = CASES[index]
    assert node_table[index]["ok"] is ok
    assert_same(host, verdict(host, cert), node_table[index])


def test_error_shape() -> None:
    cert = san("DNS:a.com, DNS:*.b.com, IP Address:0:0:0:0:0:0:0:1")
    with pytest.raises(TLSCertificateError) as info:
        check_server_identity("X.com.", cert)
    assert info.value.code == "ERR_TLS_CERT_ALTNAME_INVALID"
    assert info.value.reason == (
        "Host: X.com. is not in the cert's altnames: DNS:a.com, DNS:*.b.com, "
        "IP Address:0:0:0:0:0:0:0:1"
    )
    prefix = "Hostname/IP does not match certificate's altnames: "
    assert str(info.value) == prefix + info.value.reason
    assert (info.value.host, info.value.cert) == ("X.com.", cert)
    with pytest.raises(TLSCertificateError) as info:
        check_server_identity("::2", cert)
    assert info.value.reason == "IP: ::2 is not in the cert's list: ::1"
    with pytest.raises(TLSCertificateError) as info:
        check_server_identity("a.com", cn(["x", "y"]))
    assert info.value.reason == "Host: a.com. is not cert's CN: x,y"
    with pytest.raises(TLSCertificateError) as info:
        check_server_identity("a.com", san('DNS:"a'))
    assert info.value.code == "ERR_TLS_CERT_ALTNAME_FORMAT"


def _random_cases(count: int) -> list[tuple[str, dict[str, Any]]]:
    """Names built from the pieces the matching rules care about, for a differential run."""
    rng = random.Random(6125)
    labels = ["a", "B", "com", "*", "b*", "*b", "a*b", "**", "xn--p1ai", "xn--*", "é", "", "x y"]
    ips = ["127.0.0.1", "::1", "::ffff:1.2.3.4", "fe80::1%lo", "1.2.3.04", "0:0:0:0:0:0:0:1"]
    for _ in range(40):  # IPv6 altnames as node prints them, with runs of zeros to compress
        words = [rng.choice([0, 0, 0, 1, 0xFFFF, 0xABC]) for _ in range(8)]
        ips.append(":".join(f"{w:X}" for w in words))

    def name() -> str:
        host = ".".join(rng.choice(labels) for _ in range(rng.randint(1, 4)))
        return host + rng.choice(["", "", "."])

    def altname() -> str:
        kind = rng.choice(["DNS:", "DNS:", "IP Address:", "URI:", "email:"])
        return kind + (rng.choice(ips) if kind == "IP Address:" else name())

    cases = []
    for _ in range(count):
        names = [altname() for _ in range(rng.randint(0, 3))]
        cert: dict[str, Any] = {"subjectaltname": ", ".join(names)} if rng.random() < 0.8 else {}
        if rng.random() < 0.5:
            cert["subject"] = {"CN": rng.choice([name(), [name(), name()]])}
        host = rng.choice(ips) if rng.random() < 0.2 else name()
        if names and rng.random() < 0.5:  # a name the certificate (nearly) holds
            host = rng.choice(names).split(":", 1)[1].replace("*", rng.choice(["", "x", "ab"]))
            host = host.upper() if rng.random() < 0.3 else host
        cases.append((host, cert))
    return cases


def test_random_names_match_node() -> None:
    cases = _random_cases(600)
    for (host, cert), node in zip(cases, node_verdicts(cases), strict=True):
        assert_same(host, verdict(host, cert), node)


_TEXT = st.text(alphabet='aB*.:-%"\\, é1', max_size=20) | st.text(max_size=20)
_NAME = _TEXT | st.ip_addresses().map(str)


@settings(max_examples=300, deadline=None)
@given(
    host=_NAME,
    names=st.lists(st.sampled_from(["DNS:", "IP Address:", "URI:", ""]).flatmap(
        lambda kind: _NAME.map(lambda name: kind + name)), max_size=4),
    common=st.none() | _TEXT | st.lists(_TEXT, max_size=3),
)  # fmt: skip
def test_random_input_never_crashes(host: str, names: list[str], common: Any) -> None:
    cert = {"subjectaltname": ", ".join(names), "subject": {"CN": common}}
    try:
        check_server_identity(host, cert)
    except TLSCertificateError as exc:
        assert exc.code in {"ERR_TLS_CERT_ALTNAME_INVALID", "ERR_TLS_CERT_ALTNAME_FORMAT"}
