#!/usr/bin/env python3
"""Full TLS handshakes per second of aiotls.serve with 1 and 2 workers, and what each costs.

    python benchmarks/workers.py [--workers 1,2] [--repeats 3] [--seconds 5]
                                 [--concurrency 16] [--resumed] [--json out.json]

Each cell starts a fresh server process: ``aiotls.serve`` (a supervisor and N uvloop
workers) or, as the baseline, bench.py's single-process ``aiotls.start_server`` on
uvloop ("in-process"); the certificate is bench.py's ECDSA P-256 one. bench.py's C load
client (GnuTLS, TLS 1.3 only, X25519) keeps ``--concurrency`` connections going:
connect, full handshake (``--resumed``: offer the newest ticket, which another worker may
have issued), read the server's b"x", close.

Nothing is pinned: the point is how the workers share the machine with everything else,
the load client included. So besides the wall-clock rate the table gives CPU per
handshake of the server (the supervisor and every worker, from /proc/<pid>/stat) and of
the client, and how many cores each kept busy; "other" is whatever else ran on the
machine meanwhile (on a shared host, look there first when numbers jump). See
benchmarks/README.md for the figures measured here and the scaling note.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench

READY = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
WORKER = re.compile(r"worker \d+ \(pid (\d+), generation 1\) serving")
BASELINE = "in-process"


def make_rsa_certs(directory: Path) -> None:
    """Replace ca.pem, key.pem and chain.pem with an RSA-2048 leaf for localhost."""
    from aiotls import pki

    ca = pki.make_ca("aiotls workers bench CA")
    key, chain = ca.issue([bench.SERVER_NAME, bench.HOST], key_type="rsa")
    for name, data in (("ca.pem", ca.cert_pem), ("key.pem", key), ("chain.pem", chain)):
        (directory / name).write_bytes(data)


def server_main(workers: int, certdir: Path) -> None:
    """The server role: aiotls.serve until SIGTERM; its log goes to stdout."""
    import aiotls

    log = logging.getLogger("aiotls.workers")
    log.setLevel(logging.INFO)
    log.addHandler(logging.StreamHandler(sys.stdout))
    aiotls.serve(
        bench.greet_handler,
        bench.HOST,
        0,
        workers=workers,
        key=certdir / "key.pem",
        cert=certdir / "chain.pem",
        loop="uvloop",
        graceful_timeout=2.0,
    )


def start_server(column: str, certdir: Path) -> tuple[subprocess.Popen[str], int, list[int]]:
    """A fresh server for one cell: (process, port, the pids whose CPU is the server's)."""
    me = Path(__file__).resolve()
    if column == BASELINE:
        cmd = [
            sys.executable,
            str(me.with_name("bench.py")),
            "--role",
            "server",
            "--impl",
            "aiotls+uvloop",
            "--workload",
            "hs",
            "--certdir",
            str(certdir),
        ]
    else:
        cmd = [
            sys.executable,
            str(me),
            "--role",
            "server",
            "--workers",
            column,
            "--certdir",
            str(certdir),
        ]
    with open(certdir / f"server-{column}.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
    assert proc.stdout is not None
    port, pids = 0, [proc.pid]
    watchdog = threading.Timer(bench.READY_TIMEOUT, proc.kill)  # only the process we started
    watchdog.start()
    try:
        for line in proc.stdout:
            if line.startswith("READY "):  # bench.py's server
                return proc, int(line.split()[1]), pids
            if match := READY.search(line):
                port = int(match[1])
            elif match := WORKER.search(line):
                pids.append(int(match[1]))
            elif line.startswith("generation 1 serving"):
                return proc, port, pids
    finally:
        watchdog.cancel()
    stop_server(proc)
    raise RuntimeError(f"the {column} server did not start; see {certdir}/server-{column}.log")


def stop_server(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (aiotls.serve) and EOF on stdin (bench.py); SIGKILL if that fails."""
    with contextlib.suppress(OSError):
        assert proc.stdin is not None
        proc.stdin.close()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()  # the process we started; its workers end with their channel
        proc.wait(15)


def machine_ticks() -> tuple[int, int, int]:
    """Ticks all cores spent (running tasks, in interrupts and softirqs, idle), /proc/stat."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return user + nice + system + steal, irq + softirq, idle + iowait


def sample(server_pids: list[int], client_pid: int) -> tuple[float, ...]:
    """(time, server ticks, client ticks, machine busy, interrupt and idle ticks) now."""
    server = sum(sum(bench.process_ticks(pid)) for pid in server_pids)
    client = sum(bench.process_ticks(client_pid))
    return time.perf_counter(), server, client, *machine_ticks()


def run_cell(
    column: str, certdir: Path, loadclient: Path, args: argparse.Namespace
) -> dict[str, float]:
    """One measurement: start a server, drive it for the window, stop it."""
    server, port, pids = start_server(column, certdir)
    try:
        cmd = [
            str(loadclient),
            "resume" if args.resumed else "hs",
            str(port),
            str(certdir / "ca.pem"),
            str(args.concurrency),
            str(args.warmup),
            str(args.seconds),
        ]
        client = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert client.stdout is not None
            marker = client.stdout.readline().split()  # "WINDOW <count> <resumed>"
            if not marker or marker[0] != "WINDOW":
                raise RuntimeError(f"the load client failed: {client.stdout.read()!r}")
            start = sample(pids, client.pid)
            totals_line = client.stdout.readline()
            end = sample(pids, client.pid)
            client.wait(bench.IO_TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()  # the process we started
                client.wait()
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
    finally:
        stop_server(server)
    totals = json.loads(totals_line)
    count = totals["count"] - int(marker[1])
    if count <= 0 or totals["failures"]:
        raise RuntimeError(f"{count} handshakes, {totals['failures']} failures: {totals}")
    wall = end[0] - start[0]
    server_s, client_s, busy_s, irq_s, idle_s = (
        (end[i] - start[i]) / bench.CLK_TCK for i in range(1, 6)
    )
    return {
        "hs_per_s": count / wall,
        "server_us_per_hs": server_s * 1e6 / count,
        "client_us_per_hs": client_s * 1e6 / count,
        "hs_per_server_cpu_s": count / server_s,
        "server_cores": server_s / wall,
        "client_cores": client_s / wall,
        "other_cores": max(busy_s - server_s - client_s, 0.0) / wall,
        "irq_cores": irq_s / wall,
        "idle_cores": idle_s / wall,
        "resumed": (totals["reused"] - int(marker[2])) / count,
    }


ROWS = (
    ("hs_per_s", "handshakes/s (wall)", "{:,.0f}"),
    ("hs_per_server_cpu_s", "handshakes per server CPU-second", "{:,.0f}"),
    ("server_us_per_hs", "server CPU µs per handshake", "{:,.0f}"),
    ("client_us_per_hs", "load client CPU µs per handshake", "{:,.0f}"),
    ("server_cores", "cores busy: server (supervisor + workers)", "{:.2f}"),
    ("client_cores", "cores busy: load client", "{:.2f}"),
    ("other_cores", "cores busy: anything else", "{:.2f}"),
    ("irq_cores", "cores in interrupts and softirqs (loopback TCP)", "{:.2f}"),
    ("idle_cores", "cores idle", "{:.2f}"),
    ("resumed", "resumed", "{:.0%}"),
)


def table(results: dict[str, list[dict[str, float]]]) -> str:
    """Medians per column, with ± half the min-max spread, as a markdown table."""
    columns = [c for c in results if results[c]]
    heads = [c if c == BASELINE else f"serve, {c} worker{'s' if c != '1' else ''}" for c in columns]
    lines = [f"| | {' | '.join(heads)} |", "|---|" + "---|" * len(columns)]
    for key, label, fmt in ROWS:
        cells = []
        for column in columns:
            values = [run[key] for run in results[column]]
            median = statistics.median(values)
            spread = (max(values) - min(values)) / 2 / median if median else 0.0
            cells.append(fmt.format(median) + (f" ±{spread:.0%}" if len(values) > 1 else ""))
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument(
        "--no-baseline", action="store_true", help=f"skip the {BASELINE} start_server column"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--resumed", action="store_true", help="resume with tickets")
    parser.add_argument(
        "--key-type", choices=["ecdsa", "rsa"], default="ecdsa", help="the server's key"
    )
    parser.add_argument(
        "--noise-retries",
        type=int,
        default=3,
        help=f"measure a cell again while anything else kept > {bench.NOISY} cores busy",
    )
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--role", choices=["server"], help=argparse.SUPPRESS)
    parser.add_argument("--certdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        server_main(int(args.workers), args.certdir)
        return 0
    columns = ([] if args.no_baseline else [BASELINE]) + args.workers.split(",")
    results: dict[str, list[dict[str, float]]] = {column: [] for column in columns}
    with tempfile.TemporaryDirectory(prefix="aiotls-workers-") as tmp:
        certdir = Path(tmp)
        bench.make_certs(certdir)
        if args.key_type == "rsa":  # the same files, with an RSA-2048 leaf
            make_rsa_certs(certdir)
        loadclient, why = bench.build_loadclient(certdir)
        if loadclient is None:
            print(f"cannot build the C load client: {why}", file=sys.stderr)
            return 2
        for repeat in range(1, args.repeats + 1):
            for column in columns:  # interleaved, so slow drifts hit every column alike
                best: dict[str, float] | None = None
                for _attempt in range(args.noise_retries + 1):  # keep the quietest window
                    result = run_cell(column, certdir, loadclient, args)
                    print(
                        f"[{repeat}/{args.repeats}] {column:>10}: {result['hs_per_s']:,.0f} "
                        f"hs/s, server {result['server_us_per_hs']:,.0f} µs/hs on "
                        f"{result['server_cores']:.2f} cores, client "
                        f"{result['client_us_per_hs']:,.0f} µs/hs, other "
                        f"{result['other_cores']:.2f} cores",
                        file=sys.stderr,
                    )
                    if best is None or result["other_cores"] < best["other_cores"]:
                        best = result
                    if best["other_cores"] <= bench.NOISY:
                        break
                assert best is not None
                results[column].append(best)
    kind = "resumed (ticket)" if args.resumed else "full"
    key = "ECDSA P-256" if args.key_type == "ecdsa" else "RSA-2048"
    print(
        f"\n{kind} TLS 1.3 handshakes, {key}, X25519, {args.concurrency} connections "
        f"at a time; {os.cpu_count()} cores, nothing pinned; median of {args.repeats}\n"
    )
    print(table(results))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "results": results},
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
