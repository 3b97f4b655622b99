"""The measurement tools of benchmarks/, run as the integrator runs them: subprocesses.

Short runs only (a couple of cells, a few hundred messages): what is checked is that the
request/response workload, the fallback column, the chart, the per-message and
per-handshake profiles and the memory floor produce their rows, not how fast anything is.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
TIMEOUT = 150


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a benchmarks/ script to completion with this interpreter."""
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=BENCHMARKS.parent, check=False)


def gnutls_headers() -> bool:
    """Whether loadclient.c can be built here (a C compiler and GnuTLS's headers)."""
    return bool(shutil.which("cc") and shutil.which("pkg-config")) and subprocess.run(
        ["pkg-config", "--exists", "gnutls"], check=False).returncode == 0


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("client", ["python", "c"])
def test_request_response_rows_fallback_column_and_chart(client: str, tmp_path: Path) -> None:
    if client == "c" and not gnutls_headers():
        pytest.skip("no C compiler or libgnutls28-dev for loadclient.c")
    out = tmp_path / "out.json"
    proc = run("bench.py", "--quick", "--only", "rr-streams,rr-protocol", "--impl",
               "uvloop+ssl,aiotls+uvloop,aiotls+uvloop-fallback", "--client", client,
               "--results", str(tmp_path), "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("\ncommand: `python benchmarks/bench.py --quick --only")

    table = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:]
             for line in proc.stdout.splitlines() if line.startswith("| ")}
    for app in ("streams app", "Protocol app"):
        for row in (f"50 conns x 1 KiB req/resp, {app}: messages per server CPU-second (↑)",
                    f"req/resp, {app}: p50 latency, µs (↓)",
                    f"req/resp, {app}: p99 latency, µs (↓)"):
            assert all(re.fullmatch(r"[\d,.]+( ±\d+%)?", cell.strip(" |")) for cell in table[row])
    peer, aiotls, fallback = (c.strip(" |") for c in
                              table["aiotls data path (compiled: aiotls._speedups loaded)"])
    assert (peer, fallback) == ("-", "python")  # AIOTLS_NO_EXTENSIONS=1 keeps it out
    assert aiotls in ("compiled", "python")
    assert "aiotls+uvloop-fallback vs the best peer" in proc.stdout

    results = json.loads(out.read_text())
    for impl in ("uvloop+ssl", "aiotls+uvloop", "aiotls+uvloop-fallback"):
        (cell,) = results["runs"][impl]["rr-protocol"]
        assert cell["count"] > 0 and 0 < cell["p50_us"] <= cell["p99_us"] <= cell["max_us"]
    (md,) = tmp_path.glob("*.md")
    assert md.read_text().startswith("command: `python benchmarks/bench.py --quick")
    assert md.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert f"]({md.stem}.png)" in md.read_text()


@pytest.mark.timeout(TIMEOUT)
def test_profile_counts_frames_and_cffi_calls_per_message(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    proc = run("profile_msg.py", "--impl", "aiotls+uvloop-fallback,uvloop+ssl", "--app",
               "protocol,streams", "--messages", "200", "--warmup", "20", "--top", "100",
               "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| aiotls+uvloop-fallback | Protocol app | python |" in proc.stdout
    results = {(r["impl"], r["app"]): r for r in json.loads(out.read_text())["results"]}
    assert len(results) == 4

    def per_msg(r: dict[str, object], function: str) -> float:
        return next(t["per_msg"] for t in r["top"]  # type: ignore[attr-defined]
                    if t["function"].endswith(function))

    for impl in ("aiotls+uvloop-fallback", "uvloop+ssl"):
        # the app's own callback runs exactly once per echoed message: counts are per message
        assert per_msg(results[(impl, "protocol")], " EchoProtocol.data_received") == 1.0
        assert per_msg(results[(impl, "streams")], " echo_handler") == 1.0
    aiotls = results[("aiotls+uvloop-fallback", "protocol")]
    assert aiotls["cffi_calls_per_msg"] >= 1  # the fallback reaches OpenSSL through cffi
    assert per_msg(aiotls, "lib.SSL_write") == 1.0
    assert results[("uvloop+ssl", "protocol")]["cffi_calls_per_msg"] == 0


@pytest.mark.timeout(TIMEOUT)
def test_baseline_impls_run_another_checkouts_aiotls(tmp_path: Path) -> None:
    """--baseline: an impl@base runs the aiotls of the given directory (here a copy of the
    package without its compiled extension), beside this checkout's, and the report
    compares them."""
    base = tmp_path / "base"
    shutil.copytree(BENCHMARKS.parent / "aiotls", base / "aiotls",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    out = tmp_path / "bench.json"
    proc = run("bench.py", "--quick", "--only", "hs", "--impl", "aiotls+uvloop,aiotls+uvloop@base",
               "--baseline", str(base), "--client", "python", "--results", "-", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| metric | aiotls+uvloop vs aiotls+uvloop@base |" in proc.stdout
    assert re.search(r"\| full handshakes per server CPU-second \| x\d", proc.stdout)
    runs = json.loads(out.read_text())["runs"]
    assert runs["aiotls+uvloop@base"]["hs"][0]["data_path"] == "python"  # no .so copied
    assert runs["aiotls+uvloop"]["hs"][0]["data_path"] in ("compiled", "python")
    refused = run("bench.py", "--impl", "aiotls@base")
    assert refused.returncode == 2 and "give --baseline DIR" in refused.stderr


@pytest.mark.parametrize("mode", ["full", "resumed"])
def test_profile_hs_splits_handshake_cpu_into_openssl_and_the_rest(mode: str,
                                                                   tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    out = tmp_path / "hs.json"
    syscalls = mode == "full" and shutil.which("strace") is not None
    proc = run("profile_hs.py", "--impl", "aiotls+uvloop,uvloop+ssl", "--seconds", "0.5",
               "--floor-handshakes", "30", "--json", str(out),
               *(["--resume"] if mode == "resumed" else []),
               *(["--syscalls"] if syscalls else []))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| OpenSSL handshake µs (SSL_do_handshake) |" in proc.stdout
    data = json.loads(out.read_text())
    results = {r["impl"]: r for r in data["results"]}
    assert set(results) == {"aiotls+uvloop", "uvloop+ssl"}
    for r in results.values():
        assert r["resumed"] == (mode == "resumed")
        # cProfile found OpenSSL's handshake entry point (cffi's, or _ssl's) by its name
        assert 0 < r["openssl_hs_us"] < r["cpu_us"]
        assert r["ssl_new_us"] > 0 and r["python_frames_per_hs"] > 0 and r["c_calls_per_hs"] > 0
        if syscalls:  # every connection was accepted once, whoever counts the edges
            assert 0.5 < r["syscalls"]["accept4"] < 1.5
    assert results["aiotls+uvloop"]["ssl_free_us"] > 0  # cffi's finaliser calls SSL_free
    assert results["uvloop+ssl"]["ssl_free_us"] is None  # _ssl frees it in C, unseen
    floor = data["floor"]
    assert set(floor) == {"pyOpenSSL", "ssl"} and all(f["us_per_hs"] > 0 for f in floor.values())
    assert f"with ssl ({floor['ssl']['openssl']})" in proc.stdout


@pytest.mark.timeout(TIMEOUT)
def test_memory_floor_measures_both_openssls_and_aiotls_python_bytes(tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    out = tmp_path / "memory.json"
    proc = run("memory_floor.py", "--objects", "300", "--conns", "40", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    c = data["c_memory"]
    assert set(c) == {"wheel-bare", "wheel-handshaken", "ssl-bare", "ssl-handshaken"}
    assert all(r["kib_per_object"] > 1 for r in c.values())  # an SSL* is KiBs, never bytes
    assert "(wheel)" in proc.stdout and "(Python ssl)" in proc.stdout
    traced = data["traced"]
    assert traced["conns"] == 40 and traced["groups"]["aiotls"] > 0
    assert any(t["line"].startswith("aiotls: ") for t in traced["top"])
