"""An aiohttp app served over aiotls: ``aiotls.aiohttp.run_app`` instead of ``web.run_app``.

Run it, then fetch from it with ``examples/aiohttp_client.py`` (or curl)::

    python examples/aiohttp_server.py                      # ephemeral certificate
    python examples/aiohttp_server.py --port 8443 --key server.key --cert server.pem

Without ``--key``/``--cert`` it makes an ephemeral CA and a certificate for
localhost/127.0.0.1/::1 in memory (:mod:`aiotls.pki`) and writes the CA certificate
to ``--ca-out`` (default: ``aiotls-aiohttp-example-ca.pem`` in the temporary
directory), where ``aiohttp_client.py`` looks for it. ``GET /`` answers with what
the request's TLS connection negotiated. Stop it with Ctrl-C (or SIGTERM): requests
in flight finish first.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from aiohttp import web

from aiotls import pki
from aiotls.aiohttp import run_app

DEFAULT_CA_OUT = os.path.join(tempfile.gettempdir(), "aiotls-aiohttp-example-ca.pem")


async def hello(request: web.Request) -> web.Response:
    """What this request's connection negotiated, as JSON."""
    tls = request.transport.get_extra_info("tls") if request.transport else None
    if tls is None:
        raise web.HTTPInternalServerError(text="no TLS connection")
    return web.json_response(
        {
            "secure": request.secure,
            "protocol": tls.get_protocol(),
            "cipher": tls.get_cipher()["name"],
            "group": tls.engine.get_group_name(),
            "alpn": tls.alpn_protocol,
            "session_reused": tls.session_reused,
        }
    )


def load_identity(args: argparse.Namespace) -> tuple[bytes, bytes]:
    """The server's key and certificate chain: from files, or freshly made."""
    if args.key and args.cert:
        with open(args.key, "rb") as key, open(args.cert, "rb") as cert:
            return key.read(), cert.read()
    ca = pki.make_ca("aiotls aiohttp example CA")
    with open(args.ca_out, "wb") as f:
        f.write(ca.cert_pem)
    print(f"ephemeral CA written to {args.ca_out}", flush=True)
    return ca.issue(["localhost", "127.0.0.1", "::1"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    parser.add_argument("--key", help="PEM private key file (with --cert)")
    parser.add_argument("--cert", help="PEM certificate chain file (with --key)")
    parser.add_argument("--ca-out", default=DEFAULT_CA_OUT, help="where to write the ephemeral CA")
    arguments = parser.parse_args()
    if bool(arguments.key) != bool(arguments.cert):
        parser.error("--key and --cert go together")
    key, cert = load_identity(arguments)
    app = web.Application()
    app.router.add_get("/", hello)
    run_app(app, host=arguments.host, port=arguments.port, key=key, cert=cert)
