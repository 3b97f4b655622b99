"""A TLS echo client: ``aiotls.open_connection`` verifying the server against a CA.

Start ``examples/echo_server.py`` first, then::

    python examples/echo_client.py hello world          # one line per argument
    python examples/echo_client.py --port 8443 --ca ca.pem --servername localhost hi

The client trusts only the CA in ``--ca`` (default: the ephemeral CA that
``echo_server.py`` writes), checks that the certificate is valid for
``--servername`` (sent as SNI too), sends each message as a line and prints what
comes back, then closes with a TLS close_notify.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile

import aiotls

DEFAULT_CA = os.path.join(tempfile.gettempdir(), "aiotls-example-ca.pem")


async def main(args: argparse.Namespace) -> int:
    """Echo each message once; return the exit code (1 if an echo came back wrong)."""
    with open(args.ca, "rb") as f:
        ca = f.read()
    reader, writer = await aiotls.open_connection(
        args.host, args.port, ca=ca, servername=args.servername
    )
    tls = writer.get_extra_info("tls")
    cipher = tls.get_cipher()
    print(f"connected: {tls.get_protocol()}, {cipher['name']}, verified {args.servername}")
    status = 0
    try:
        for message in args.messages:
            writer.write(message.encode() + b"\n")
            await writer.drain()
            echoed = (await reader.readline()).decode().rstrip("\n")
            print(f"echo: {echoed}")
            if echoed != message:
                status = 1
    finally:
        writer.close()
        await writer.wait_closed()
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("messages", nargs="*", default=["hello, TLS"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--ca", default=DEFAULT_CA, help="PEM file of the CA to trust")
    parser.add_argument("--servername", default="localhost", help="SNI and expected host name")
    try:
        sys.exit(asyncio.run(main(parser.parse_args())))
    except (aiotls.TLSError, OSError) as exc:
        sys.exit(f"echo_client: {exc}")
