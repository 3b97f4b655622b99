"""An aiohttp client over aiotls: ``ClientSession(connector=aiotls.aiohttp.TLSConnector(...))``.

Start ``examples/aiohttp_server.py`` first, then::

    python examples/aiohttp_client.py                       # two requests to 127.0.0.1:8443
    python examples/aiohttp_client.py --url https://localhost:8443/ --ca ca.pem --count 3

The connector trusts only the CA in ``--ca`` (default: the ephemeral CA that
``aiohttp_server.py`` writes) and checks the host name with Node's rules. Each
request gets a new connection (``force_close=True``), so from the second on the
connector's session cache resumes the TLS session: the server reports
``session_reused: true``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile

import aiohttp

from aiotls.aiohttp import TLSConnector

DEFAULT_CA = os.path.join(tempfile.gettempdir(), "aiotls-aiohttp-example-ca.pem")


async def main(args: argparse.Namespace) -> int:
    """Fetch ``--url`` ``--count`` times and print what each connection negotiated."""
    with open(args.ca, "rb") as f:
        ca = f.read()
    connector = TLSConnector(ca=ca, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(args.count):
            async with session.get(args.url) as resp:
                resp.raise_for_status()
                seen = await resp.json()
            print(
                f"{resp.status} {seen['protocol']} {seen['cipher']} {seen['group']} "
                f"alpn={seen['alpn']} session_reused={seen['session_reused']}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="https://127.0.0.1:8443/")
    parser.add_argument("--ca", default=DEFAULT_CA, help="PEM file of the CA to trust")
    parser.add_argument("--count", type=int, default=2, help="requests, one connection each")
    try:
        sys.exit(asyncio.run(main(parser.parse_args())))
    except (aiohttp.ClientError, OSError) as exc:
        sys.exit(f"aiohttp_client: {exc}")
