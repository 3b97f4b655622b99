"""What the ``aiotls`` subcommands share: exit codes, the event loop choice, the TLS
flags of ``connect`` and ``serve``, safe file writing, and the description of a
handshake (for the terminal table, the JSON output and ``serve``'s page).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.util
import os
import textwrap
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .demo import describe_group, name_text

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_tls_arguments",
    "certificate_facts",
    "context_options",
    "handshake_facts",
    "handshake_rows",
    "keylog_writer",
    "loop_parent",
    "run_async",
    "wrap",
    "write_file",
]

EXIT_OK = 0
#: The work failed: network, handshake, verification, a file that exists already.
EXIT_FAILURE = 1
#: The command line is wrong, or a file it names cannot be used (argparse's own code).
EXIT_USAGE = 2

T = TypeVar("T")

_VERSIONS = {"1.2": "TLSv1.2", "1.3": "TLSv1.3", "TLSv1.2": "TLSv1.2", "TLSv1.3": "TLSv1.3"}


def _default_loop() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def wrap(text: str) -> str:
    """A help description as wrapped lines: the subcommands print their help raw, so
    that the examples in the epilog keep their layout."""
    return textwrap.fill(text, width=79)


def loop_parent() -> argparse.ArgumentParser:
    """A parent parser with ``--loop``, for every subcommand that runs an event loop."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default=_default_loop(),
        help="event loop (default here: %(default)s; uvloop when installed, else asyncio)",
    )
    return parent


def run_async(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` to completion on a new event loop of the kind ``loop`` names."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            main.close()
            raise SystemExit(
                "aiotls: --loop uvloop: uvloop is not installed (pip install 'aiotls[uvloop]')"
            ) from None
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _version(text: str) -> str:
    try:
        return _VERSIONS[text]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected 1.2 or 1.3, got {text!r}") from None


def _alpn(text: str) -> list[str]:
    protocols = [p.strip() for p in text.split(",")]
    if not all(protocols):
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return protocols


def add_tls_arguments(parser: argparse.ArgumentParser, *, ca_help: str) -> None:
    """The flags ``connect`` and ``serve`` share: identity, trust, versions, suites, ALPN."""
    group = parser.add_argument_group("TLS options")
    group.add_argument("--ca", metavar="FILE", type=Path, help=ca_help)
    group.add_argument(
        "--cert", metavar="FILE", type=Path, help="PEM certificate chain (with --key)"
    )
    group.add_argument("--key", metavar="FILE", type=Path, help="PEM private key (with --cert)")
    group.add_argument("--passphrase", help="passphrase of an encrypted --key")
    group.add_argument(
        "--alpn", metavar="LIST", type=_alpn, help="ALPN protocols, e.g. h2,http/1.1"
    )
    group.add_argument(
        "--tls-version", type=_version, metavar="1.2|1.3", help="use exactly this TLS version"
    )
    group.add_argument("--min-version", type=_version, metavar="1.2|1.3", help="lowest TLS version")
    group.add_argument(
        "--max-version", type=_version, metavar="1.2|1.3", help="highest TLS version"
    )
    group.add_argument("--ciphers", metavar="LIST", help="TLS 1.2 cipher list (OpenSSL syntax)")
    group.add_argument("--ciphersuites", metavar="LIST", help="TLS 1.3 suites, colon-separated")
    group.add_argument(
        "--groups", metavar="LIST", help="key exchange groups, e.g. X25519MLKEM768:X25519"
    )
    group.add_argument(
        "--keylog", metavar="FILE", type=Path, help="append NSS key-log lines (for Wireshark)"
    )


def context_options(args: argparse.Namespace) -> dict[str, Any]:
    """``create_secure_context`` options from the flags of :func:`add_tls_arguments`.

    Raises ValueError for flags that do not go together, OSError for a file that
    cannot be read.
    """
    if (args.cert is None) != (args.key is None):
        raise ValueError("--cert and --key go together")
    if args.tls_version and (args.min_version or args.max_version):
        raise ValueError("--tls-version cannot be combined with --min-version/--max-version")
    flags = {
        "ca": args.ca and args.ca.read_bytes(),
        "cert": args.cert and args.cert.read_bytes(),
        "key": args.key and args.key.read_bytes(),
        "passphrase": args.passphrase,
        "alpn_protocols": args.alpn,
        "min_version": args.tls_version or args.min_version,
        "max_version": args.tls_version or args.max_version,
        "ciphers": args.ciphers,
        "ciphersuites": args.ciphersuites,
        "ecdh_curve": args.groups,
    }
    return {name: value for name, value in flags.items() if value is not None}


@contextlib.contextmanager
def keylog_writer(path: Path | None) -> Iterator[Callable[[bytes], None] | None]:
    """An ``on_keylog`` hook appending to ``path`` (created 0600: the lines are secrets),
    or None without a path; the file is closed on exit."""
    if path is None:
        yield None
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "ab") as log:

        def write(line: bytes) -> None:
            log.write(line)
            log.flush()  # a capture tool reading along sees each key at once

        yield write


def write_file(path: Path, data: bytes, *, mode: int, replace: bool = False) -> None:
    """Write ``data`` to a new file ``path`` with permission bits ``mode``.

    A key never exists with wider permissions, not even for a moment. An existing
    ``path`` raises FileExistsError unless ``replace``, which swaps in the new file
    atomically.
    """
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if replace else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with open(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # the umask may have cleared bits mode asks for
            f.write(data)
        if replace:
            os.replace(target, path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _utc(when: datetime.datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M:%S} UTC"


def certificate_facts(cert: x509.Certificate) -> dict[str, Any]:
    """Subject, issuer, validity and SHA-256 fingerprint of ``cert``, JSON-ready."""
    now = datetime.datetime.now(datetime.UTC)
    return {
        "subject": name_text(cert.subject),
        "issuer": name_text(cert.issuer),
        "valid_from": _utc(cert.not_valid_before_utc),
        "valid_to": _utc(cert.not_valid_after_utc),
        "valid_now": cert.not_valid_before_utc <= now <= cert.not_valid_after_utc,
        "fingerprint256": cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    }


def handshake_facts(tls: Any) -> dict[str, Any]:
    """What a connection negotiated (``tls`` is ``get_extra_info("tls")``), JSON-ready."""
    cipher = tls.get_cipher() or {}
    group = tls.engine.get_group_name()
    description, post_quantum = describe_group(group)
    alpn = tls.alpn_protocol
    return {
        "protocol": tls.get_protocol(),
        "cipher": cipher.get("name"),
        "cipher_standard_name": cipher.get("standardName"),
        "group": group,
        "group_description": description,
        "post_quantum": post_quantum,
        "alpn": alpn if isinstance(alpn, str) else None,
        "servername": tls.servername,
        "session_reused": bool(tls.session_reused),
    }


def handshake_rows(facts: dict[str, Any]) -> list[tuple[str, str]]:
    """:func:`handshake_facts` as the demo's table rows (label, value)."""
    cipher = facts["cipher"] or "(none)"
    if facts["cipher_standard_name"] and facts["cipher_standard_name"] != facts["cipher"]:
        cipher += f" ({facts['cipher_standard_name']})"
    return [
        ("protocol", facts["protocol"] or "(unknown)"),
        ("cipher", cipher),
        ("key exchange", f"{facts['group'] or '(unknown)'} ({facts['group_description']})"),
        ("ALPN", facts["alpn"] or "(none)"),
        ("SNI", facts["servername"] or "(none)"),
        ("session", "resumed" if facts["session_reused"] else "new (full handshake)"),
    ]
