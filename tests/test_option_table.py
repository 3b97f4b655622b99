"""The option table drives validation (issue 8): every option's ``Opt(check=...)`` runs
through one routine, ``aiotls.context.validated``, at the call that received the value
(create_secure_context for context options, the front doors for all of them), and an
option without a check is one that is checked together with others where they combine.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from parity import MODP1024_P, dh_pem

import aiotls
from aiotls import options
from aiotls.context import CONTEXT_OPTIONS, CONTEXT_SPECS, option_names, option_specs

pytestmark = pytest.mark.timeout(20)

#: The options with ``check=None``, and where they are checked instead.
CHECKED_TOGETHER = {
    "key": "create_secure_context pairs keys with cert by public key, using passphrase",
    "cert": "create_secure_context pairs each chain with a key",
    "pfx": "create_secure_context decrypts it with passphrase (or its own) and pairs it",
    "min_version": "create_secure_context, against max_version and secure_protocol",
    "max_version": "create_secure_context, against min_version and secure_protocol",
    "secure_protocol": "create_secure_context, against min_version and max_version",
    "alpn_protocols": "split takes a server's selector; a list is the context table's",
    "ocsp_stapling": "split, with on_ocsp_request and its companions",
    "ocsp_cache_dir": "split: only with ocsp_stapling='auto'",
    "ocsp_must_staple": "split: only with ocsp_stapling='auto'",
}
TABLES = (aiotls.ContextOptions, aiotls.ServerOptions, aiotls.ClientOptions)
CHECKED = {
    name
    for specs in (CONTEXT_SPECS, options.CONNECTION_SPECS)
    for name, opt in specs.items()
    if opt.check is not None
}
CONTEXT_CHECKED = sorted(CHECKED & CONTEXT_OPTIONS)
SERVER_CHECKED = sorted(CHECKED & option_names(aiotls.ServerOptions))
CLIENT_CHECKED = sorted(CHECKED & option_names(aiotls.ClientOptions))


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.__name__)
def test_every_option_has_a_check_or_is_checked_together(table: type) -> None:
    unchecked = {name for name, opt in option_specs(table).items() if opt.check is None}
    assert unchecked <= set(CHECKED_TOGETHER)


def test_the_checked_together_list_names_only_unchecked_options() -> None:
    for name in CHECKED_TOGETHER:
        assert any(
            option_specs(table).get(name) is not None and option_specs(table)[name].check is None
            for table in TABLES
        ), name


def test_context_and_connection_options_split_the_names_between_them() -> None:
    """The table's names, once: every option of a front door is either a context option
    (CONTEXT_SPECS, validated by create_secure_context) or a connection option
    (CONNECTION_SPECS, validated by split), never both."""
    doors = option_names(aiotls.ServerOptions) | option_names(aiotls.ClientOptions)
    assert not CONTEXT_OPTIONS & set(options.CONNECTION_SPECS)
    assert CONTEXT_OPTIONS | set(options.CONNECTION_SPECS) == doors


@pytest.mark.parametrize("name", CONTEXT_CHECKED)
def test_each_context_option_is_checked_at_create_secure_context(name: str) -> None:
    with pytest.raises(TypeError, match=f"^{name}: expected"):
        aiotls.create_secure_context(**{name: object()})


@pytest.mark.parametrize("name", SERVER_CHECKED)
async def test_each_server_option_is_checked_at_create_server(name: str) -> None:
    kwargs: Any = {name: object()}
    with pytest.raises(TypeError, match=f"^{name}: expected"):
        await aiotls.create_server(lambda: None, "127.0.0.1", 0, **kwargs)


@pytest.mark.parametrize("name", CLIENT_CHECKED)
async def test_each_client_option_is_checked_at_open_connection(name: str) -> None:
    kwargs: Any = {name: object()}
    with pytest.raises(TypeError, match=f"^{name}: expected"):
        await aiotls.open_connection("127.0.0.1", 9, **kwargs)


def test_options_are_checked_before_any_material_is_read(tmp_path: Path) -> None:
    """One pass over the table first: a wrong type raises before a file is opened."""
    with pytest.raises(TypeError, match=r"^honor_cipher_order: expected bool"):
        aiotls.create_secure_context(cert=tmp_path / "missing.pem", honor_cipher_order="yes")
    with pytest.raises(FileNotFoundError, match=r"\] cert: "):
        aiotls.create_secure_context(cert=tmp_path / "missing.pem")


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        ({"session_timeout": float("nan")}, ValueError, "^session_timeout: must be"),
        ({"session_timeout": float("inf")}, ValueError, "^session_timeout: must be positive"),
        ({"alpn_protocols": [1]}, TypeError, "^alpn_protocols: expected protocol names"),
        ({"alpn_protocols": ["h2", "x" * 256]}, ValueError, "^alpn_protocols: invalid protocol"),
        ({"npn_protocols": ["h2", b""]}, ValueError, "^npn_protocols: invalid protocol"),
        ({"ciphers": b"DEFAULT"}, TypeError, "^ciphers: expected str, got bytes"),
    ],
)
def test_context_checks_reject_bad_values(
    given: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        aiotls.create_secure_context(**given)


def test_a_weak_dhparam_warning_names_the_callers_line() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # (@SECLEVEL=1: OpenSSL's default level refuses primes under 2048 bits.)
        aiotls.create_secure_context(dhparam=dh_pem(MODP1024_P), ciphers="DEFAULT:@SECLEVEL=1")
    (warning,) = (w for w in caught if "dhparam" in str(w.message))
    assert warning.filename == __file__
