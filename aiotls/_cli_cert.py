"""``aiotls cert``: a local CA, server and client certificates, a CSR and a PKCS#12
bundle, made with :mod:`aiotls.pki` (cryptography) instead of ``openssl`` commands.

Files are created new (an existing one is an error unless ``--force``), private keys
and bundles with mode 0600 and certificates with 0644; a directory ``--out``
creates is 0700. The default names fit together: ``ca.pem``/``ca.key``,
``server.pem``/``server.key``, ``client.pem``/``client.key`` are what ``aiotls
serve``, ``aiotls connect`` and the README's example read.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import pki
from ._cli_common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, wrap, write_file

__all__ = ["register"]

PROG = "aiotls cert"
KEY_MODE = 0o600
CERT_MODE = 0o644

#: What a kind makes: {path: (data, permission bits)}; none is written if any exists.
Files = dict[Path, tuple[bytes, int]]
Make = Callable[[argparse.Namespace], Files]

DESCRIPTION = (
    "Make PKI files with cryptography instead of openssl commands. Files are created new "
    "(an existing one is an error unless --force), keys and bundles with mode 0600, "
    "certificates 0644. The default names fit together: ca.pem/ca.key, "
    "server.pem/server.key and client.pem/client.key are what 'aiotls serve', "
    "'aiotls connect' and the README's example read."
)

EXAMPLES = """\
examples (in an empty directory):
  aiotls cert ca                               # ca.pem, ca.key: a local CA
  aiotls cert leaf localhost 127.0.0.1 ::1     # server.pem, server.key, signed by ./ca.*
  aiotls cert client alice                     # client.pem, client.key (CN=alice)
  aiotls cert csr www.example.com              # request.csr, request.key for a real CA
  aiotls cert p12 --cert server.pem --key server.key --ca ca.pem \\
      --out server.p12 --passphrase secret     # for pfx= / Node's pfx
then:
  aiotls serve --cert server.pem --key server.key
  aiotls connect localhost:8443 --ca ca.pem
"""


def _days(text: str) -> datetime.timedelta:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of days, got {text!r}")
    return datetime.timedelta(days=int(text))


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``cert`` and its subcommands to the ``aiotls`` subcommands."""
    del parents  # nothing here runs an event loop
    cert = commands.add_parser(
        "cert",
        help="make a local CA, server/client certificates, a CSR, a PKCS#12 bundle",
        description=wrap(DESCRIPTION),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = cert.add_subparsers(dest="kind", metavar="KIND", required=True)

    def kind(name: str, help: str, example: str, make: Make) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = kinds.add_parser(
            name,
            help=help,
            description=wrap(help[0].upper() + help[1:] + "."),
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--force", action="store_true", help="replace existing files")
        parser.set_defaults(run=functools.partial(_write_files, make=make))
        return parser

    def out_dir(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--out", type=Path, default=Path("."), metavar="DIR", help="where to write (.)"
        )

    def key_type(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--key-type",
            choices=["ecdsa", "rsa"],
            default="ecdsa",
            help="ECDSA P-256 or RSA 2048 (default: %(default)s)",
        )

    def signed(parser: argparse.ArgumentParser, basename: str) -> None:
        parser.add_argument(
            "--ca",
            type=Path,
            default=Path("."),
            metavar="DIR",
            help="directory with the CA's ca.pem and ca.key (default: .)",
        )
        parser.add_argument(
            "--basename", default=basename, help="file names BASENAME.pem, BASENAME.key"
        )
        parser.add_argument("--days", type=_days, default=_days("90"), help="validity in days (90)")
        key_type(parser)

    ca = kind(
        "ca",
        "make a certificate authority: ca.pem and ca.key",
        "aiotls cert ca --out pki",
        _make_ca,
    )
    out_dir(ca)
    ca.add_argument("--name", default="aiotls local CA", help="the CA's name (%(default)s)")
    ca.add_argument("--days", type=_days, default=_days("365"), help="validity in days (365)")
    key_type(ca)

    leaf = kind(
        "leaf",
        "make a server certificate for host names and IP addresses, signed by the CA",
        "aiotls cert leaf localhost 127.0.0.1 ::1 --ca pki --out pki",
        _make_leaf,
    )
    leaf.add_argument("names", nargs="+", metavar="NAME", help="DNS name or IP address")
    out_dir(leaf)
    signed(leaf, "server")

    client = kind(
        "client",
        "make a client certificate with common name CN, signed by the CA",
        "aiotls cert client alice --ca pki --out pki",
        _make_client,
    )
    client.add_argument("common_name", metavar="CN", help="the client's name")
    out_dir(client)
    signed(client, "client")

    csr = kind(
        "csr",
        "make a key and a certificate signing request for host names (for another CA)",
        "aiotls cert csr www.example.com example.com",
        _make_csr,
    )
    csr.add_argument("names", nargs="+", metavar="NAME", help="DNS name or IP address")
    out_dir(csr)
    csr.add_argument("--basename", default="request", help="BASENAME.csr, BASENAME.key")
    key_type(csr)

    p12 = kind(
        "p12",
        "bundle a key and its certificate chain as PKCS#12, encrypted with a passphrase",
        "aiotls cert p12 --cert server.pem --key server.key --out server.p12 --passphrase x",
        _make_p12,
    )
    p12.add_argument("--cert", type=Path, required=True, metavar="FILE", help="PEM chain")
    p12.add_argument("--key", type=Path, required=True, metavar="FILE", help="PEM private key")
    p12.add_argument(
        "--ca", type=Path, metavar="FILE", help="PEM CA certificates to include as well"
    )
    p12.add_argument("--out", type=Path, required=True, metavar="FILE", help="the .p12 to write")
    p12.add_argument("--passphrase", required=True, help="what the bundle is encrypted with")
    p12.add_argument("--name", help="friendly name stored with the key")


def _write_files(args: argparse.Namespace, make: Make) -> int:
    """Make the files (``make`` returns {path: (data, mode)}), write them, list them."""
    try:
        files = make(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"{PROG} {args.kind}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.force and (exists := [str(p) for p in files if p.exists()]):
        print(
            f"{PROG} {args.kind}: not replacing {', '.join(exists)} (use --force)", file=sys.stderr
        )
        return EXIT_FAILURE
    try:
        for path, (data, mode) in files.items():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_file(path, data, mode=mode, replace=args.force)
            print(f"wrote {path} (mode {mode:04o})")
    except OSError as exc:
        print(f"{PROG} {args.kind}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _load_ca(directory: Path) -> pki.CA:
    return pki.load_ca((directory / "ca.pem").read_bytes(), (directory / "ca.key").read_bytes())


def _make_ca(args: argparse.Namespace) -> Files:
    ca = pki.make_ca(args.name, key_type=args.key_type, validity=args.days)
    return {
        args.out / "ca.pem": (ca.cert_pem, CERT_MODE),
        args.out / "ca.key": (ca.key_pem, KEY_MODE),
    }


def _make_signed(args: argparse.Namespace, names: list[str], cn: str | None) -> Files:
    ca = _load_ca(args.ca)
    key_pem, cert_pem = ca.issue(names, key_type=args.key_type, common_name=cn, validity=args.days)
    return {
        args.out / f"{args.basename}.pem": (cert_pem, CERT_MODE),
        args.out / f"{args.basename}.key": (key_pem, KEY_MODE),
    }


def _make_leaf(args: argparse.Namespace) -> Files:
    return _make_signed(args, args.names, None)


def _make_client(args: argparse.Namespace) -> Files:
    return _make_signed(args, [], args.common_name)


def _make_csr(args: argparse.Namespace) -> Files:
    key_pem, csr_pem = pki.make_csr(args.names, key_type=args.key_type)
    return {
        args.out / f"{args.basename}.csr": (csr_pem, CERT_MODE),
        args.out / f"{args.basename}.key": (key_pem, KEY_MODE),
    }


def _make_p12(args: argparse.Namespace) -> Files:
    bundle = pki.make_pkcs12(
        args.key.read_bytes(),
        args.cert.read_bytes(),
        args.passphrase.encode(),
        extra_certs_pem=args.ca.read_bytes() if args.ca else None,
        friendly_name=args.name.encode() if args.name else None,
    )
    return {args.out: (bundle, KEY_MODE)}  # it holds the private key
