"""Multi-core serving (aiotls.serve, aiotls.workers.supervise): a supervisor and its workers.

The server runs as a subprocess (tests/workers_app.py) whose workers use the test's own
kind of loop; the test waits on the lines its log prints ("listening on ...", "worker 0
(pid N, generation 1) serving", ...), never on time. Clients are aiotls clients that
verify the server; each connection first reads the serving worker's pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from util import eventually

import aiotls

APP = Path(__file__).with_name("workers_app.py")
EXPECT_TIMEOUT = 20.0
SERVING = r"worker (\d+) \(pid (\d+), generation {generation}\) serving"


def _loop_name() -> str:
    """The kind of loop the test runs on, for the workers to run on too."""
    return (
        "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
    )


@dataclass
class App:
    """The workers_app subprocess: its log lines so far, and its port."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    port: int = 0

    async def _collect(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode().rstrip("\n"))
            self.changed.set()
        self.ended = True
        self.changed.set()

    async def expect(self, pattern: str, *, start: int = 0) -> re.Match[str]:
        """The first line from ``start`` on that matches ``pattern``, once it is printed."""
        regex = re.compile(pattern)
        index = start
        try:
            async with asyncio.timeout(EXPECT_TIMEOUT):
                while True:
                    while index < len(self.lines):
                        if match := regex.search(self.lines[index]):
                            return match
                        index += 1
                    if self.ended:
                        raise AssertionError("the app ended")
                    self.changed.clear()
                    await self.changed.wait()
        except (TimeoutError, AssertionError):
            output = "\n".join(self.lines)
            raise AssertionError(f"no line matching {pattern!r} in:\n{output}") from None

    async def serving(self, generation: int, *, start: int = 0) -> dict[int, int]:
        """Slot -> pid of the workers of ``generation``, once it serves alone."""
        done = await self.expect(f"generation {generation} serving with", start=start)
        pids: dict[int, int] = {}
        for line in self.lines[start : self.lines.index(done.string) + 1]:
            if match := re.search(SERVING.format(generation=generation), line):
                pids[int(match.group(1))] = int(match.group(2))
        return pids

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)


@contextlib.asynccontextmanager
async def running(mode: str, key: Path, cert: Path, *args: str) -> AsyncIterator[App]:
    """Start workers_app; stop it (SIGTERM, then SIGKILL) however the test ends."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(APP), mode, "--key", str(key), "--cert", str(cert),
        "--loop", _loop_name(), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # a process group of its own, as a terminal would give it
    )  # fmt: skip
    app = App(proc)
    collecting = asyncio.create_task(app._collect())
    try:
        if mode == "serve" or "--fail" not in args:
            app.port = int((await app.expect(r"listening on 127\.0\.0\.1:(\d+)"))[1])
        yield app
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(EXPECT_TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                proc.kill()  # the app we started; its workers stop when its channel closes
                await proc.wait()
        await collecting


@dataclass
class Visit:
    """What one client connection saw."""

    pid: int
    tag: str
    resumed: bool
    session: bytes | None
    fingerprint: str


async def visit(
    port: int, ca_pem: str, *, session: bytes | None = None, max_version: str | None = None
) -> Visit:
    """Connect, read the worker's line, echo one line (TLS 1.3 tickets have arrived by
    then), close."""
    options = {"max_version": max_version} if max_version else {}
    reader, writer = await aiotls.open_connection(
        "127.0.0.1", port, ca=ca_pem, servername="localhost", session=session, **options
    )
    try:
        pid, tag = (await reader.readline()).decode().split()
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"
        tls = writer.get_extra_info("tls")
        return Visit(
            int(pid),
            tag,
            bool(tls.session_reused),
            tls.get_session(),
            tls.get_peer_certificate()["fingerprint256"],
        )
    finally:
        writer.close()
        with contextlib.suppress(aiotls.TLSError, OSError):
            await writer.wait_closed()


def write_identity(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    """A fresh server key and certificate for localhost, as files (replaced atomically)."""
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    key, cert = directory / "server.key", directory / "server.pem"
    for path, blob in ((key, leaf.private_key_pem), (cert, leaf.cert_chain_pems[0])):
        blob.write_to_path(str(path.with_suffix(".tmp")))
        os.replace(path.with_suffix(".tmp"), path)
    return key, cert


def state(pid: int) -> str:
    """A process's state letter (R, S, T for stopped, Z for zombie), "" when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    return stat.rpartition(")")[2].split()[0]


def accept_queues(port: int) -> dict[str, int]:
    """Socket inode -> accept queue length, of the listening sockets on 127.0.0.1:port."""
    queues = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":  # LISTEN
            queues[fields[9]] = int(fields[4].split(":")[1], 16)
    return queues


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets a process holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)).startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


@pytest.fixture
def identity(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    return write_identity(ca, tmp_path)


# -- sessions and ticket keys ------------------------------------------------------------


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
async def test_a_session_resumes_on_every_worker(
    identity: tuple[Path, Path], ca_pem: str, version: str
) -> None:
    async with running("serve", *identity, "--workers", "2") as app:
        workers = set((await app.serving(1)).values())
        first = await visit(app.port, ca_pem, max_version=version)
        assert not first.resumed
        seen = {first.pid}
        for _ in range(64):  # SO_REUSEPORT spreads connections by address hash
            again = await visit(app.port, ca_pem, session=first.session, max_version=version)
            assert again.resumed, f"not resumed on pid {again.pid} (first: {first.pid})"
            seen.add(again.pid)
            if seen == workers:
                break
        assert seen == workers


async def test_rotated_ticket_keys_reach_every_worker(
    identity: tuple[Path, Path], ca_pem: str
) -> None:
    """After a rotation an old ticket gets a full handshake, and a new one resumes on
    both workers: each worker got the new keys from the supervisor."""
    async with running("serve", *identity, "--workers", "2", "--interval", "3") as app:
        workers = set((await app.serving(1)).values())
        for _attempt in range(3):  # a rotation during the checks spoils them: again
            old = await visit(app.port, ca_pem)
            rotated = await app.expect("ticket keys rotated", start=len(app.lines))
            mark = app.lines.index(rotated.string) + 1
            after = await visit(app.port, ca_pem, session=old.session)
            seen = {after.pid}
            resumed = []
            while seen != workers and len(resumed) < 64:
                again = await visit(app.port, ca_pem, session=after.session)
                resumed.append(again.resumed)
                seen.add(again.pid)
            if not any("ticket keys rotated" in line for line in app.lines[mark:]):
                break
        else:
            pytest.fail("the keys rotated during every attempt")
        assert not after.resumed
        assert seen == workers
        assert all(resumed)


# -- worker death ------------------------------------------------------------------------


@pytest.mark.parametrize("reuse_port", ["yes", "no"])
async def test_a_killed_worker_is_replaced_and_no_connection_is_refused(
    identity: tuple[Path, Path], ca_pem: str, reuse_port: str
) -> None:
    """A worker stops (SIGSTOP), then dies (SIGKILL) under load: every TCP connect
    succeeds, every connection begun after the stop is served, and only connections the
    worker had accepted before it stopped are lost. With a SO_REUSEPORT socket per
    worker, connections that queued on the dead worker's socket are served by its
    replacement."""
    concurrency = 4
    async with running("serve", *identity, "--workers", "2", "--reuse-port", reuse_port) as app:
        workers = await app.serving(1)
        slot, victim = next(iter(workers.items()))
        loop = asyncio.get_running_loop()
        refused: list[BaseException] = []
        lost_before_stop: list[BaseException] = []
        served: list[tuple[bool, bool, int]] = []  # (begun after the stop, after the kill, pid)
        stopped, killed, progress = asyncio.Event(), asyncio.Event(), asyncio.Event()
        finished = False

        async def client() -> None:
            while not finished:
                after_stop, after_kill = stopped.is_set(), killed.is_set()
                sock = socket.socket()
                sock.setblocking(False)
                try:
                    async with asyncio.timeout(5):
                        await loop.sock_connect(sock, ("127.0.0.1", app.port))
                except (OSError, TimeoutError) as exc:
                    sock.close()
                    refused.append(exc)
                    continue
                progress.set()  # connected: it sits in an accept queue now
                try:
                    reader, writer = await aiotls.open_connection(
                        sock=sock, ca=ca_pem, servername="localhost"
                    )
                    pid = int((await reader.readline()).split()[0])
                    writer.close()
                    with contextlib.suppress(aiotls.TLSError, OSError):
                        await writer.wait_closed()
                    served.append((after_stop, after_kill, pid))
                except (aiotls.TLSError, OSError, ValueError, IndexError) as exc:
                    assert not after_stop, f"lost a connection begun after the stop: {exc!r}"
                    lost_before_stop.append(exc)
                progress.set()

        clients = [asyncio.create_task(client()) for _ in range(concurrency)]

        async def until(condition: Callable[[], bool], what: str) -> None:
            try:
                async with asyncio.timeout(EXPECT_TIMEOUT):
                    while not condition():
                        progress.clear()
                        waiter = asyncio.ensure_future(progress.wait())
                        await asyncio.wait([waiter, *clients], return_when=asyncio.FIRST_COMPLETED)
                        waiter.cancel()
                        for task in clients:
                            if task.done():
                                raise task.exception() or AssertionError("a client ended")
            except TimeoutError:
                log = "\n".join(app.lines)
                pytest.fail(
                    f"no {what}; served {len(served)}, refused {refused}, lost before the stop "
                    f"{lost_before_stop}; log:\n{log}"
                )

        try:
            await until(lambda: len(served) >= 20, "20 connections served")
            os.kill(victim, signal.SIGSTOP)
            try:
                await eventually(lambda: state(victim) == "T", timeout=EXPECT_TIMEOUT)
                assert state(victim) == "T"
                stopped.set()
                # Fresh clients: the first ones may all wait on connections the stopped
                # worker accepted (those are the ones allowed to be lost).
                clients += [asyncio.create_task(client()) for _ in range(concurrency)]
                if reuse_port == "yes":  # connections wait on the stopped worker's socket
                    (own,) = socket_inodes(victim) & set(accept_queues(app.port))
                    await until(
                        lambda: accept_queues(app.port)[own] >= 1,
                        "connection queued on the stopped worker's socket",
                    )
                else:  # the other worker takes them all from the one socket
                    await until(
                        lambda: sum(after for after, _, _ in served) >= 2 * concurrency,
                        "connections served while the worker was stopped",
                    )
            finally:
                os.kill(victim, signal.SIGKILL)
                killed.set()
            mark = len(app.lines)
            await app.expect(
                rf"worker {slot} \(pid {victim}, .*\) was killed by SIGKILL; restarting it$",
                start=mark,
            )
            restarted = rf"worker {slot} \(pid (\d+), generation 1\) serving"
            replacement = int((await app.expect(restarted, start=mark))[1])
            if reuse_port == "yes":  # the connections queued before the kill
                await until(
                    lambda: any(not k and pid == replacement for _, k, pid in served),
                    "queued connection served by the replacement",
                )
            else:
                await until(
                    lambda: any(pid == replacement for _, _, pid in served),
                    "connection served by the replacement",
                )
        finally:
            finished = True  # the clients end after their current connection
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(EXPECT_TIMEOUT):
                    await asyncio.gather(*clients, return_exceptions=True)
            for task in clients:
                task.cancel()
        assert not refused
        assert len(lost_before_stop) <= concurrency  # one per first client at most
        assert victim not in {pid for after, _, pid in served if after}


async def test_workers_stop_when_the_supervisor_dies(
    identity: tuple[Path, Path], ca_pem: str
) -> None:
    async with running("serve", *identity, "--workers", "2") as app:
        pids = list((await app.serving(1)).values())
        app.signal(signal.SIGKILL)
        await app.proc.wait()
        await eventually(lambda: not any(state(pid) not in ("", "Z") for pid in pids), 20)
        assert all(state(pid) in ("", "Z") for pid in pids)


# -- reload and stop ---------------------------------------------------------------------


async def test_sighup_reloads_the_certificate_files(
    ca: trustme.CA, identity: tuple[Path, Path], ca_pem: str, tmp_path: Path
) -> None:
    """A broken file refuses the reload (the old workers go on); a good one gives a new
    generation of workers with the new certificate, while a connection of before goes on
    with its old worker until it ends."""
    key, cert = identity
    async with running("serve", key, cert, "--workers", "2") as app:
        old_pids = set((await app.serving(1)).values())
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", app.port, ca=ca_pem, servername="localhost"
        )
        old_pid = int((await reader.readline()).split()[0])
        old_fingerprint = writer.get_extra_info("tls").get_peer_certificate()["fingerprint256"]

        cert.write_text("not a certificate\n")
        mark = len(app.lines)
        app.signal(signal.SIGHUP)
        await app.expect(r"reload failed: prepare\(\) raised", start=mark)
        still = await visit(app.port, ca_pem)
        assert still.fingerprint == old_fingerprint
        assert still.pid in old_pids

        write_identity(ca, tmp_path)
        mark = len(app.lines)
        app.signal(signal.SIGHUP)
        new_pids = set((await app.serving(2, start=mark)).values())
        assert len(new_pids) == 2
        assert not new_pids & old_pids
        seen = set()
        for _ in range(16):
            fresh = await visit(app.port, ca_pem)
            assert fresh.fingerprint != old_fingerprint
            assert fresh.pid in new_pids
            seen.add(fresh.pid)

        writer.write(b"still here\n")  # the old worker drains its connection
        assert await reader.readline() == b"still here\n"
        writer.close()
        await writer.wait_closed()
        await app.expect(rf"\(pid {old_pid}, generation 1\) exited with status 0", start=mark)


async def test_sigterm_lets_open_connections_finish(
    identity: tuple[Path, Path], ca_pem: str
) -> None:
    async with running("serve", *identity, "--workers", "1") as app:
        await app.serving(1)
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", app.port, ca=ca_pem, servername="localhost"
        )
        await reader.readline()
        app.signal(signal.SIGTERM)
        await app.expect("SIGTERM: stopping")
        writer.write(b"one more\n")
        assert await reader.readline() == b"one more\n"
        assert app.proc.returncode is None
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(EXPECT_TIMEOUT):
            assert await app.proc.wait() == 0
        assert re.search(r"generation 1\) exited with status 0", "\n".join(app.lines))


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT])
async def test_a_signal_to_the_whole_process_group_is_the_supervisors(
    identity: tuple[Path, Path], ca_pem: str, signum: signal.Signals
) -> None:
    """Ctrl-C, or a terminal closing, signals every process of the group: the workers
    leave it to the supervisor, which reloads (SIGHUP) or stops (SIGINT) them in order."""
    async with running("serve", *identity, "--workers", "2") as app:
        old = set((await app.serving(1)).values())
        mark = len(app.lines)
        os.killpg(app.proc.pid, signum)
        if signum == signal.SIGHUP:
            await app.serving(2, start=mark)
        else:
            async with asyncio.timeout(EXPECT_TIMEOUT):
                assert await app.proc.wait() == 0
        for pid in old:
            await app.expect(rf"\(pid {pid}, generation 1\) exited with status 0", start=mark)


# -- supervise: prepare, config per generation, a first start that fails -----------------


async def test_prepare_runs_once_per_start_and_reload_and_replacements_keep_its_config(
    identity: tuple[Path, Path], ca_pem: str
) -> None:
    async with running("supervise", *identity, "--workers", "2") as app:
        await app.serving(1)
        assert (await visit(app.port, ca_pem)).tag == "1"
        mark = len(app.lines)
        app.signal(signal.SIGHUP)
        workers = await app.serving(2, start=mark)
        assert [line for line in app.lines if line.startswith("prepare call")] == [
            "prepare call 1",
            "prepare call 2",
        ]
        slot, victim = next(iter(workers.items()))
        mark = len(app.lines)
        os.kill(victim, signal.SIGKILL)
        replacement = int(
            (await app.expect(rf"worker {slot} \(pid (\d+), generation 2\) serving", start=mark))[1]
        )
        tags = {}
        for _ in range(64):
            seen = await visit(app.port, ca_pem)
            tags[seen.pid] = seen.tag
            if replacement in tags:
                break
        assert tags[replacement] == "2"
        assert set(tags.values()) == {"2"}


async def test_a_first_start_that_fails_raises_with_the_workers_reason(
    identity: tuple[Path, Path],
) -> None:
    async with running("supervise", *identity, "--workers", "2", "--fail") as app:
        raised = await app.expect("supervise raised: ")
        async with asyncio.timeout(EXPECT_TIMEOUT):
            assert await app.proc.wait() == 1
    assert re.search(
        r"the workers could not start: worker \d \(pid \d+, generation 1\) exited with "
        r"status 1 before it was serving: RuntimeError: boom before serving",
        raised.string,
    )


# -- bad calls raise before anything forks -----------------------------------------------


def _no_fork() -> int:
    raise AssertionError("serve() forked despite a bad argument")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"workers": 0}, ValueError, "workers"),
        ({"limit": 0}, ValueError, "limit"),
        ({"workers": True}, TypeError, "workers"),
        ({"loop": "trio"}, ValueError, "loop"),
        ({"graceful_timeout": -1}, ValueError, "graceful_timeout"),
        ({"ticket_key_interval": 0}, ValueError, "ticket_key_interval"),
        ({"handshake_timeout": -1}, ValueError, "handshake_timeout"),
        ({"frobnicate": 1}, TypeError, "frobnicate"),
        ({"ciphers": "NO-SUCH-CIPHER"}, aiotls.TLSError, "ciphers"),
        ({"key": None, "cert": None}, aiotls.TLSError, "certificate"),
        ({"ticket_key_interval": None, "ticket_keys": b"short"}, ValueError, "80 bytes"),
    ],
)
def test_bad_options_raise_from_serve_before_any_worker_starts(
    monkeypatch: pytest.MonkeyPatch,
    identity: tuple[Path, Path],
    kwargs: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    monkeypatch.setattr(os, "fork", _no_fork)
    key, cert = identity
    options = {"key": key, "cert": cert, **kwargs}
    with pytest.raises(error, match=message):
        aiotls.serve(_echo, "127.0.0.1", 0, **options)  # type: ignore[arg-type]


def test_serve_refuses_a_thread_other_than_the_main_one(
    monkeypatch: pytest.MonkeyPatch, identity: tuple[Path, Path]
) -> None:
    monkeypatch.setattr(os, "fork", _no_fork)
    key, cert = identity
    errors: list[BaseException] = []

    def call() -> None:
        try:
            aiotls.serve(_echo, "127.0.0.1", 0, key=key, cert=cert)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(EXPECT_TIMEOUT)
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError)
    assert "main thread" in str(errors[0])


async def test_serve_refuses_a_running_event_loop(
    monkeypatch: pytest.MonkeyPatch, identity: tuple[Path, Path]
) -> None:
    monkeypatch.setattr(os, "fork", _no_fork)
    key, cert = identity
    with pytest.raises(RuntimeError, match="outside a running event loop"):
        aiotls.serve(_echo, "127.0.0.1", 0, key=key, cert=cert)
