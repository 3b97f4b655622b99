"""``aiotls proxy``: the TLS terminator (:mod:`aiotls.proxy`) from the command line.

With ``--config FILE`` it runs the routes of a TOML file; without, the flags describe
one route (certificate, backend, client policy). Its first lines are ``listening on
HOST:PORT`` and, with metrics, ``metrics on HOST:PORT``; then the access log (JSON
lines) unless it goes to a file. Diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ._cli_common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, run_async, wrap
from .proxy import (
    Proxy,
    ProxyConfig,
    ProxyConfigError,
    load_config,
    parse_config,
    run_proxy,
    run_proxy_workers,
)
from .proxy.routing import RouteTable

__all__ = ["register"]

PROG = "aiotls proxy"

EXAMPLES = """\
examples:
  aiotls proxy --config proxy.toml             # routes, policies and limits from a file
  aiotls proxy --config proxy.toml --check     # only check the file and its certificates
  aiotls proxy --listen 0.0.0.0:443 --cert server.pem --key server.key \\
               --backend 127.0.0.1:8080        # terminate TLS, forward to a local app
  aiotls proxy --cert server.pem --key server.key --backend unix:/run/app.sock \\
               --ca clients.pem --require-cert --allow-cn alice --proxy-protocol
  aiotls proxy --cert server.pem --key server.key --backend 127.0.0.1:8080 \
               --metrics 127.0.0.1:9100        # Prometheus text on /metrics
  aiotls proxy --config proxy.toml --workers 4 # one process per core, sharing the port
signals: SIGHUP reloads the configuration and certificates (so does a change to any
of their files, without --workers); SIGTERM stops accepting, lets connections finish
for drain_timeout, then exits.
a configuration file:
  [proxy]
  listen = "0.0.0.0:443"
  metrics = "127.0.0.1:9100"
  [[route]]
  sni = ["api.example.com"]
  cert = "api.pem"
  key = "api.key"
  backend = "127.0.0.1:8080"
  proxy_protocol = true
  [route.client_auth]
  mode = "require"
  ca = "clients.pem"
  allow_cn = ["alice"]
"""


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``proxy`` to the ``aiotls`` subcommands."""
    parser = commands.add_parser(
        "proxy",
        parents=parents,
        help="a TLS terminator: TLS in, plaintext to backends, routed by SNI",
        description=wrap(
            "Listen on TLS and forward the plaintext to a backend (host:port or "
            "unix:/path), with routes by SNI (and ALPN) from a TOML file (--config) or "
            "one route from the flags. Client certificate policies with allow-lists, "
            "PROXY protocol v2 to the backend, reloads without dropping connections "
            "(SIGHUP, file changes), a graceful drain on SIGTERM, a JSON access log "
            "line per connection and Prometheus metrics. The first line printed is "
            "'listening on HOST:PORT'."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration")
    parser.add_argument(
        "--check", action="store_true", help="check the configuration and certificates, then exit"
    )
    flags = parser.add_argument_group("one route from flags (instead of --config)")
    flags.add_argument("--listen", metavar="ADDRESS", help="host:port or unix:/path (:8443)")
    flags.add_argument("--cert", metavar="FILE", help="PEM certificate chain")
    flags.add_argument("--key", metavar="FILE", help="PEM private key")
    flags.add_argument("--backend", metavar="ADDRESS", help="host:port or unix:/path")
    flags.add_argument("--ca", metavar="FILE", help="CA that client certificates chain to")
    flags.add_argument("--crl", metavar="FILE", help="revocation list for client certificates")
    auth = flags.add_mutually_exclusive_group()
    auth.add_argument("--require-cert", action="store_true", help="refuse clients without one")
    auth.add_argument("--request-cert", action="store_true", help="ask, but let clients in")
    for kind, what in (("cn", "subject CN"), ("dns", "SAN DNS name"), ("uri", "SAN URI")):
        flags.add_argument(
            f"--allow-{kind}", action="append", metavar="VALUE", help=f"admit this {what}"
        )
    flags.add_argument(
        "--proxy-protocol", action="store_true", help="send a PROXY v2 header to the backend"
    )
    flags.add_argument("--metrics", metavar="ADDRESS", help="serve /metrics on host:port")
    flags.add_argument("--access-log", metavar="FILE", help='"-" (stdout, default), a file, "off"')
    parser.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="serve from N worker processes sharing the port and the session ticket keys "
        "(SIGHUP starts a new generation with the configuration read again)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="diagnostics on stderr (default: %(default)s)",
    )
    parser.set_defaults(run=run)


def _positive(text: str) -> int:
    """A worker count: 1 or more."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes, 1 or more, got {text!r}")
    return number


def _flags_config(args: argparse.Namespace) -> ProxyConfig:
    """The configuration the flags describe: one default route."""
    if args.cert is None or args.key is None or args.backend is None:
        raise ProxyConfigError("give --config FILE, or --cert, --key and --backend")
    client_auth: dict[str, Any] = {}
    if args.require_cert or args.request_cert:
        client_auth["mode"] = "require" if args.require_cert else "optional"
    for name in ("ca", "crl", "allow_cn", "allow_dns", "allow_uri"):
        if getattr(args, name) is not None:
            client_auth[name] = getattr(args, name)
    route = {"cert": args.cert, "key": args.key, "backend": args.backend}
    if client_auth:
        route["client_auth"] = client_auth
    if args.proxy_protocol:
        route["proxy_protocol"] = True
    proxy = {"listen": args.listen or ":8443"}
    if args.metrics:
        proxy["metrics"] = args.metrics
    if args.access_log:
        proxy["access_log"] = args.access_log
    return parse_config({"proxy": proxy, "route": [route]}, base=Path.cwd(), source="command line")


def _config(args: argparse.Namespace) -> ProxyConfig:
    """The file's configuration, or the flags'; not both."""
    if args.config is None:
        return _flags_config(args)
    names = ("listen", "cert", "key", "backend", "ca", "crl", "allow_cn", "allow_dns",
             "allow_uri", "require_cert", "request_cert", "proxy_protocol", "metrics",
             "access_log")  # fmt: skip
    given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) not in (None, False)]
    if given:
        raise ProxyConfigError(f"{given[0]}: with --config, put it in {args.config} instead")
    return load_config(args.config)


def run(args: argparse.Namespace) -> int:
    """Check the configuration (usage errors exit 2), then proxy until SIGTERM."""
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = _config(args)
        RouteTable(config)  # builds every context: a certificate that cannot be used fails here
    except ProxyConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check:
        print(f"{PROG}: configuration OK: {len(config.routes)} routes", file=sys.stderr)
        return EXIT_OK

    def ready(proxy: Proxy) -> None:
        print(f"listening on {proxy.address()}", flush=True)
        if (metrics := proxy.metrics_address()) is not None:
            print(f"metrics on {metrics}", flush=True)

    try:
        if args.workers is not None:
            run_proxy_workers(config, args.workers, loop=args.loop, on_ready=ready)
        else:
            run_async(run_proxy(config, on_ready=ready), args.loop)
    except (OSError, ProxyConfigError, RuntimeError) as exc:  # the address is taken, say
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
