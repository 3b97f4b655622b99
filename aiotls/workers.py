"""Multi-core serving: a supervisor process pre-forks workers that share a listening port.

:func:`serve` is :func:`aiotls.start_server` on every core::

    aiotls.serve(handle, "0.0.0.0", 443, workers=4, key=Path("k.pem"), cert=Path("c.pem"))

It blocks until SIGTERM or SIGINT. :func:`supervise` is the machinery beneath it, for any
server built on aiotls's front doors (``aiotls proxy --workers N``): it runs
``worker_main(sock, channel)`` in each worker process, on a fresh event loop (uvloop when
installed), with the listening socket and a :class:`WorkerChannel` to the supervisor.

- **Listening.** On Linux, one ``SO_REUSEPORT`` socket per worker slot, all bound to one
  port and all kept open by the supervisor: the kernel spreads new connections evenly over
  them (by address hash), so workers neither wake up together for one connection nor
  pile connections onto whichever woke first. Because the supervisor holds every socket, a
  slot's accept queue outlives its worker: a connection waiting there when the worker dies
  is served by its replacement, delayed, never refused. Elsewhere (no balancing
  ``SO_REUSEPORT``), or with ``reuse_port=False`` or ``sock=``, one socket shared by all.
- **Ticket keys.** The supervisor makes 80 random bytes (OpenSSL's layout), gives them to
  every worker and replaces them every ``ticket_key_interval`` seconds and on SIGHUP, so
  a TLS 1.3 or 1.2 session ticket from one worker resumes on any other. OpenSSL holds
  one key set per context: a ticket made before a rotation gets a full handshake after
  it (and a new ticket). Session IDs without tickets stay per worker (use
  ``on_resume_session`` with a shared store for those).
- **Worker death.** A worker that dies is restarted at once when it had been serving,
  and with a delay doubling from 0.1 s to 10 s when it keeps failing before it serves.
  Connections it had accepted are lost with it (their clients see a reset).
- **SIGHUP** reloads, as nginx does: ``prepare()`` runs again in the supervisor
  (:func:`serve` rebuilds its context, re-reading any ``pathlib.Path`` key or
  certificate), the ticket keys rotate, and a new generation of workers starts; once
  all of them serve, the old ones stop listening and get ``graceful_timeout`` seconds to
  finish their connections. If ``prepare()`` raises or a new worker fails before it
  serves, the old generation goes on serving and the failure is logged.
- **SIGTERM or SIGINT** stops: workers stop listening and their connections get
  ``graceful_timeout`` seconds; a second signal kills them at once.

Everything the supervisor does is logged on the ``aiotls.workers`` logger (INFO for the
routine, WARNING for a worker that died, ERROR for a failed reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import inspect
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar, Unpack

from ._aio.server import Server, start_server
from ._checks import timeout
from ._openssl import TICKET_KEYS_LENGTH
from ._openssl import extended as _extended
from .context import SecureContext, check_ticket_keys
from .options import ServerOptions

__all__ = ["WorkerChannel", "serve", "supervise"]

log = logging.getLogger("aiotls.workers")

C = TypeVar("C")

#: How long a new generation of workers may take to start serving before the start (or
#: the reload) is given up.
STARTUP_TIMEOUT = 60.0
#: Seconds a stopping worker gets beyond ``graceful_timeout`` before it is killed.
KILL_GRACE = 5.0
#: The restart delay of a worker that keeps failing before it serves doubles from the
#: first to the second.
RESTART_DELAYS = (0.1, 10.0)
#: Longest line on the control channel (the longest message is "keys" and 160 hex digits).
MAX_LINE = 1024
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_HANDLED = (signal.SIGCHLD, signal.SIGHUP, *_STOP_SIGNALS)


class WorkerChannel(Generic[C]):
    """A worker's end of the supervisor's control channel.

    In: the shared ticket keys (applied to the servers given to :meth:`serve`, now and on
    every rotation) and the request to stop (SIGTERM from the supervisor, or the
    supervisor gone). Out: "serving" and "stopped listening", which a reload waits for.
    """

    def __init__(
        self,
        worker_id: int,
        generation: int,
        config: C,
        sock: socket.socket,
        ticket_keys: bytes | None,
        graceful_timeout: float,
    ) -> None:
        #: The worker's slot, 0 to workers - 1 (a replacement keeps the slot it replaces).
        self.worker_id = worker_id
        #: 1 for the first workers, one more for each reload.
        self.generation = generation
        #: What ``prepare()`` returned for this generation (None without ``prepare``).
        self.config = config
        #: The shared 80-byte ticket keys (None where OpenSSL access lacks ticket_keys).
        self.ticket_keys = ticket_keys
        #: Seconds :meth:`serve` gives open connections once told to stop.
        self.graceful_timeout = graceful_timeout
        self._sock = sock
        self._servers: tuple[Server, ...] | None = None
        self._stopping = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None

    async def serve(self, *servers: Server) -> None:
        """Serve on ``servers`` until told to stop; call it once, when they listen.

        Gives them the shared ticket keys, tells the supervisor this worker serves, waits
        for the stop, closes them (they stop accepting; the supervisor hears so), and
        returns once their connections have ended or ``graceful_timeout`` has passed.
        """
        if self._servers is not None:
            raise RuntimeError("WorkerChannel.serve() was called already")
        self._servers = servers
        if self.ticket_keys is not None:
            for server in servers:
                server.set_ticket_keys(self.ticket_keys)
        self._send("ready")
        await self._stopping.wait()
        for server in servers:
            server.close()
        self._send("closed")
        try:
            async with asyncio.timeout(self.graceful_timeout):
                for server in servers:
                    await server.wait_closed()
        except TimeoutError:
            log.info(
                "worker %d: %d connections still open after %g s; closing them",
                self.worker_id,
                sum(server.get_connections() for server in servers),
                self.graceful_timeout,
            )

    def _send(self, line: str) -> None:
        assert self._writer is not None
        self._writer.write(line.replace("\n", " ").encode()[: MAX_LINE - 1] + b"\n")

    def _set_keys(self, keys: bytes) -> None:
        for server in self._servers or ():
            server.set_ticket_keys(keys)  # ValueError for a bad length, before anything changed
        self.ticket_keys = keys

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        """Apply the supervisor's messages; its end closing (it died) means stop."""
        try:
            while line := await reader.readline():
                verb, _, argument = line.decode("ascii", "replace").strip().partition(" ")
                if verb != "keys":
                    raise ValueError(f"unknown message {verb!r}")
                self._set_keys(bytes.fromhex(argument))
        except (ValueError, OSError) as exc:  # readline's overlong line is a ValueError
            log.error("worker %d: bad control channel (%s); stopping", self.worker_id, exc)
        self._stopping.set()

    async def _run(
        self,
        worker_main: Callable[[socket.socket, WorkerChannel[C]], Awaitable[None]],
        listener: socket.socket,
    ) -> None:
        """The worker process's whole life: listen to the supervisor, run worker_main."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._stopping.set)
        reader, self._writer = await asyncio.open_unix_connection(sock=self._sock, limit=MAX_LINE)
        listening = asyncio.create_task(self._listen(reader))
        try:
            await worker_main(listener, self)
        except Exception as exc:
            self._send(f"failed {type(exc).__name__}: {exc}")
            raise
        finally:
            listening.cancel()
            self._writer.close()


@dataclass(eq=False)
class _Worker:
    """The supervisor's record of one worker process."""

    slot: int
    generation: int
    config: Any
    pid: int
    channel: socket.socket
    inbox: bytearray = field(default_factory=bytearray)
    ready: bool = False  # it said it serves
    closed: bool = False  # it said it stopped listening
    failure: str = ""  # what it said went wrong, if it failed
    stopped: bool = False  # it was asked to stop (SIGTERM)
    kill_at: float | None = None  # when it gets SIGKILL if it has not stopped by then

    def __str__(self) -> str:
        return f"worker {self.slot} (pid {self.pid}, generation {self.generation})"


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _call(function: Callable[[], Any]) -> Any:
    """Call a plain or coroutine function in the supervisor; an awaitable is run to its
    end on a plain asyncio loop, closed before anything forks."""
    result = function()
    if inspect.isawaitable(result):

        async def wait() -> Any:
            return await result

        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            result = runner.run(wait())
    return result


def _ignore_signal(signum: int, frame: object) -> None:
    """The supervisor's handler: the signal's number reaches the loop via the wakeup fd."""


class _Supervisor:
    """The supervisor's state and its loop: signals, worker messages and timers."""

    def __init__(
        self,
        worker_main: Callable[[socket.socket, WorkerChannel[Any]], Awaitable[None]],
        sockets: list[socket.socket],
        *,
        workers: int,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
        prepare: Callable[[], Any] | None,
        config: Any,
        ticket_keys: bytes | None,
        ticket_key_interval: float | None,
        graceful_timeout: float,
    ) -> None:
        self._main = worker_main
        self._sockets = sockets
        self._size = workers
        self._loop_factory = loop_factory
        self._prepare = prepare
        self._config = config
        self._keys = ticket_keys
        self._interval = ticket_key_interval if ticket_keys is not None else None
        self._graceful = graceful_timeout
        self._generation = 0
        self._current: list[_Worker | None] = [None] * workers
        self._pending: list[_Worker] = []  # a generation starting (first start or reload)
        self._pending_deadline: float | None = None
        self._handover: set[_Worker] = set()  # retired at the last commit, still listening
        self._announce = False  # a generation took over; say so once the old one stopped
        self._reload_again = False  # SIGHUP came while a generation was starting
        self._by_pid: dict[int, _Worker] = {}
        self._restarts: dict[int, tuple[float, _Worker]] = {}  # slot -> (when, dead worker)
        self._delays: dict[int, float] = {}  # slot -> next restart delay after a failed start
        self._rotate_at = time.monotonic() + self._interval if self._interval is not None else None
        self._stopping = False
        self._failure = ""  # why the first generation could not start
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = socket.socketpair()

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        """Start the workers and supervise them until stopped; RuntimeError when the first
        generation cannot start."""
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ, self._on_signals)
        previous = {signum: signal.signal(signum, _ignore_signal) for signum in _HANDLED}
        previous_wakeup = signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        try:
            self._start_generation(self._config)
            while self._by_pid or self._restarts or not self._stopping:
                self._step()
        finally:
            for worker in self._by_pid.values():  # only after a bug: leave no orphan behind
                os.kill(worker.pid, signal.SIGKILL)
                os.waitpid(worker.pid, 0)
                worker.channel.close()
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in previous.items():  # None: one set outside Python
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
            self._selector.close()
            self._wakeup_r.close()
            self._wakeup_w.close()
        if self._failure:
            raise RuntimeError(f"the workers could not start: {self._failure}")

    def _step(self) -> None:
        deadlines = [
            self._rotate_at,
            self._pending_deadline,
            *(when for when, _ in self._restarts.values()),
            *(worker.kill_at for worker in self._by_pid.values()),
        ]
        soonest = min((d for d in deadlines if d is not None), default=None)
        timeout = None if soonest is None else max(0.0, soonest - time.monotonic())
        for key, _ in self._selector.select(timeout):
            key.data()
        self._run_timers(time.monotonic())

    def _run_timers(self, now: float) -> None:
        if self._rotate_at is not None and now >= self._rotate_at:
            self._rotate()
        if self._pending_deadline is not None and now >= self._pending_deadline:
            self._abandon(f"not all serving after {STARTUP_TIMEOUT:g} s")
        for slot, (when, dead) in list(self._restarts.items()):
            if now >= when:
                del self._restarts[slot]
                self._current[slot] = self._spawn(slot, dead.generation, dead.config)
        for worker in self._by_pid.values():
            if worker.kill_at is not None and now >= worker.kill_at:
                log.warning("%s did not stop in time; killing it", worker)
                worker.kill_at = None
                os.kill(worker.pid, signal.SIGKILL)

    def _on_signals(self) -> None:
        try:
            received = self._wakeup_r.recv(512)
        except BlockingIOError:
            return
        for signum in received:
            if signum == signal.SIGCHLD:
                self._reap()
            elif signum == signal.SIGHUP:
                self._reload()
            elif signum in _STOP_SIGNALS:
                self._stop(signal.Signals(signum).name)

    # -- workers ----------------------------------------------------------------------

    def _spawn(self, slot: int, generation: int, config: Any) -> _Worker:
        ours, theirs = socket.socketpair()
        for stream in (sys.stdout, sys.stderr):  # or the child would print it again
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
        # Until the child has dropped the supervisor's handlers, a signal sent to it
        # would reach the supervisor's wakeup socket as if the supervisor had got it.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            pid = os.fork()
            if pid == 0:
                ours.close()
                self._become_worker(slot, generation, config, theirs, mask)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        theirs.close()
        ours.setblocking(False)
        worker = _Worker(slot, generation, config, pid, ours)
        self._by_pid[pid] = worker
        self._selector.register(ours, selectors.EVENT_READ, functools.partial(self._read, worker))
        log.info("%s started", worker)
        return worker

    def _become_worker(
        self,
        slot: int,
        generation: int,
        config: Any,
        channel: socket.socket,
        mask: set[int | signal.Signals],
    ) -> NoReturn:
        """The child's side of the fork: drop the supervisor's state, run the worker."""
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(signum, signal.SIG_DFL)
            for signum in (signal.SIGINT, signal.SIGHUP):  # Ctrl-C or a closed terminal
                signal.signal(signum, signal.SIG_IGN)  # reach the whole group: for the supervisor
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self._selector.close()  # closes the epoll fd; the parent's registrations stay
            self._wakeup_r.close()
            self._wakeup_w.close()
            for other in self._by_pid.values():
                other.channel.close()
            listener = self._sockets[slot % len(self._sockets)]
            for sock in self._sockets:
                if sock is not listener:
                    sock.close()
            worker = WorkerChannel(slot, generation, config, channel, self._keys, self._graceful)
            with asyncio.Runner(loop_factory=self._loop_factory) as runner:
                runner.run(worker._run(self._main, listener))
            status = 0
        except BaseException:
            log.exception("worker %d (pid %d) failed", slot, os.getpid())
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(AttributeError, OSError, ValueError):
                    stream.flush()
            os._exit(status)

    def _read(self, worker: _Worker) -> None:
        """A worker's messages: "ready", "closed", "failed <why>"."""
        if worker.pid not in self._by_pid:  # reaped earlier in this round of events
            return
        try:
            data = worker.channel.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # it is exiting; SIGCHLD follows
            self._selector.unregister(worker.channel)
            return
        worker.inbox += data
        while (end := worker.inbox.find(b"\n")) >= 0:
            line = worker.inbox[:end].decode("ascii", "replace")
            del worker.inbox[: end + 1]
            verb, _, argument = line.partition(" ")
            if verb == "ready":
                self._serving(worker)
            elif verb == "closed":
                worker.closed = True
                self._handover.discard(worker)
                self._check_handover()
            elif verb == "failed":
                worker.failure = argument
        if len(worker.inbox) >= MAX_LINE:
            log.error("%s sent an overlong message; killing it", worker)
            worker.inbox.clear()
            os.kill(worker.pid, signal.SIGKILL)

    def _send(self, worker: _Worker, line: str) -> None:
        data = line.encode() + b"\n"
        try:
            sent = worker.channel.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:  # it is exiting; SIGCHLD follows
            return
        if sent != len(data):  # hundreds of messages unread: it is stuck
            log.error("%s does not read its control channel; killing it", worker)
            os.kill(worker.pid, signal.SIGKILL)

    def _serving(self, worker: _Worker) -> None:
        worker.ready = True
        if worker.stopped:  # asked to stop before it got going
            return
        log.info("%s serving", worker)
        self._delays.pop(worker.slot, None)
        if self._pending and all(w.ready for w in self._pending):
            self._commit()

    def _retire(self, worker: _Worker) -> None:
        """Ask a worker to stop (SIGTERM); kill it if it outstays graceful_timeout."""
        if not worker.stopped:
            worker.stopped = True
            worker.kill_at = time.monotonic() + self._graceful + KILL_GRACE
            os.kill(worker.pid, signal.SIGTERM)

    def _reap(self) -> None:
        for pid in list(self._by_pid):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self._exited(self._by_pid.pop(pid), _describe(status))

    def _exited(self, worker: _Worker, how: str) -> None:
        with contextlib.suppress(KeyError):
            self._selector.unregister(worker.channel)
        worker.channel.close()
        self._handover.discard(worker)
        if worker in self._pending:
            why = f"{worker} {how} before it was serving"
            self._abandon(f"{why}: {worker.failure}" if worker.failure else why)
        elif self._current[worker.slot] is worker:
            self._current[worker.slot] = None
            delay = 0.0
            if not worker.ready:
                low, high = RESTART_DELAYS
                delay = self._delays.get(worker.slot, low)
                self._delays[worker.slot] = min(2 * delay, high)
            log.warning(
                "%s %s%s; restarting it%s",
                worker,
                how,
                f" ({worker.failure})" if worker.failure else "",
                f" in {delay:g} s" if delay else "",
            )
            self._restarts[worker.slot] = (time.monotonic() + delay, worker)
        else:
            log.info("%s %s", worker, how)
        self._check_handover()

    # -- generations, reload, keys, stop ----------------------------------------------

    def _start_generation(self, config: Any) -> None:
        self._generation += 1
        self._pending = [self._spawn(slot, self._generation, config) for slot in range(self._size)]
        self._pending_deadline = time.monotonic() + STARTUP_TIMEOUT

    def _commit(self) -> None:
        """Every worker of the new generation serves: the old one stops listening."""
        old = [worker for worker in self._current if worker is not None]
        self._current = list(self._pending)
        self._pending, self._pending_deadline = [], None
        self._restarts.clear()  # the slots are taken by the new generation
        for worker in old:
            self._retire(worker)
            if not worker.closed:
                self._handover.add(worker)
        self._announce = True
        self._check_handover()

    def _check_handover(self) -> None:
        """Once the old generation stopped listening, say that the new one serves alone,
        and begin a reload that was asked for meanwhile."""
        if not self._announce or self._handover:
            return
        self._announce = False
        log.info("generation %d serving with %d workers", self._generation, self._size)
        if self._reload_again:
            self._reload_again = False
            self._reload()

    def _abandon(self, why: str) -> None:
        """A generation could not start: stop its workers; fall back, or give up."""
        for worker in self._pending:
            if worker.pid in self._by_pid:
                self._retire(worker)
        self._pending, self._pending_deadline = [], None
        if self._stopping:
            return
        if not any(self._current) and not self._restarts:
            self._failure = why
            self._stop("the first workers failed")
            return
        log.error("reload failed: %s; the workers of before go on serving", why)
        if self._reload_again:
            self._reload_again = False
            self._reload()

    def _reload(self) -> None:
        if self._stopping:
            return
        if self._pending or self._announce:
            log.info("SIGHUP: a reload is under way; reloading again after it")
            self._reload_again = True
            return
        log.info("SIGHUP: reloading")
        config = self._config
        if self._prepare is not None:
            try:
                config = _call(self._prepare)
            except Exception:
                log.exception("reload failed: prepare() raised; the workers go on serving")
                return
        self._config = config
        if self._interval is not None:
            self._rotate()
        self._start_generation(config)

    def _rotate(self) -> None:
        """New ticket keys for every worker (old tickets then get a full handshake)."""
        assert self._interval is not None
        self._keys = os.urandom(TICKET_KEYS_LENGTH)
        self._rotate_at = time.monotonic() + self._interval
        for worker in self._by_pid.values():
            self._send(worker, f"keys {self._keys.hex()}")
        log.info("ticket keys rotated")

    def _stop(self, why: str) -> None:
        if self._stopping:
            log.warning("%s again: killing the workers", why)
            for worker in self._by_pid.values():
                os.kill(worker.pid, signal.SIGKILL)
            return
        self._stopping = True
        log.info("%s: stopping; open connections get %g s to finish", why, self._graceful)
        self._rotate_at = self._pending_deadline = None
        self._restarts.clear()
        self._pending, self._current = [], [None] * self._size
        self._handover.clear()
        self._announce = False
        for worker in self._by_pid.values():
            self._retire(worker)


def _listeners(
    host: str | None, port: int, count: int, backlog: int, reuse_port: bool
) -> list[socket.socket]:
    """``count`` SO_REUSEPORT sockets on one port (the first picks it when port is 0),
    or one socket when not ``reuse_port``."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count if reuse_port else 1):
            sock = socket.create_server(
                address, family=family, backlog=backlog, reuse_port=reuse_port
            )
            sockets.append(sock)
            address = sock.getsockname()  # the port the first one got
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _loop_factory(loop: str | None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The workers' event loop: "uvloop", "asyncio", or None for uvloop when installed."""
    if loop not in (None, "asyncio", "uvloop"):
        raise ValueError(f"loop: expected 'asyncio', 'uvloop' or None, got {loop!r}")
    if loop == "asyncio" or (loop is None and importlib.util.find_spec("uvloop") is None):
        return None
    try:
        import uvloop
    except ImportError:
        raise ValueError("loop: uvloop is not installed (pip install 'aiotls[uvloop]')") from None
    return uvloop.new_event_loop


def supervise(
    worker_main: Callable[[socket.socket, WorkerChannel[C]], Awaitable[None]],
    *,
    workers: int = 1,
    host: str | None = None,
    port: int | None = None,
    sock: socket.socket | None = None,
    backlog: int = 100,
    reuse_port: bool | None = None,
    loop: str | None = None,
    prepare: Callable[[], C | Awaitable[C]] | None = None,
    ticket_keys: bytes | None = None,
    ticket_key_interval: float | None = 3600.0,
    graceful_timeout: float = 30.0,
) -> None:
    """Run ``worker_main(sock, channel)`` in ``workers`` processes until SIGTERM or SIGINT.

    Blocks; call it from the main thread of a process without other threads and outside
    any event loop (it forks). The listening socket is made here: ``host`` and ``port``
    (the first address ``host`` resolves to), or a bound ``sock`` of yours (then shared
    by every worker). ``reuse_port`` (default: on Linux) gives each worker slot its own
    SO_REUSEPORT socket (see the module's docstring). Each worker runs on a new event
    loop of the kind ``loop`` names ("asyncio" or "uvloop"; default uvloop when
    installed). ``worker_main`` serves on the socket it is given and calls
    ``await channel.serve(server)`` once it listens; it may build what it serves from
    ``channel.config``.

    ``prepare``, a plain or coroutine function, runs here before the first workers start
    and again on every SIGHUP; what it returns is ``channel.config`` for that
    generation's workers (and for workers restarted in their place). An exception from it
    propagates at the start and refuses a reload later.

    ``ticket_keys`` (80 bytes; default random) are shared by all workers, and replaced
    by random ones every ``ticket_key_interval`` seconds and on SIGHUP (None: never).
    ``graceful_timeout`` is how long connections may go on once their worker is told to
    stop. Raises RuntimeError when the first workers cannot start (with the reason one
    of them gave).
    """
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers: expected an int, got {type(workers).__name__}")
    if workers < 1:
        raise ValueError("workers: must be 1 or more")
    if sock is not None and (host is not None or port is not None or reuse_port):
        raise ValueError("sock: give a socket or host and port (and reuse_port), not both")
    if sock is None and port is None:
        raise ValueError("port: required without sock (0 picks a free one)")
    loop_factory = _loop_factory(loop)
    if ticket_keys is not None:
        ticket_keys = check_ticket_keys("ticket_keys", ticket_keys)
    if ticket_key_interval is not None and not timeout("ticket_key_interval", ticket_key_interval):
        raise ValueError("ticket_key_interval: must be positive (None: never replace them)")
    timeout("graceful_timeout", graceful_timeout)
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("supervise() handles signals: call it from the main thread")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("supervise() blocks and forks: call it outside a running event loop")
    if _extended.features()["ticket_keys"]:
        ticket_keys = ticket_keys or os.urandom(TICKET_KEYS_LENGTH)
    else:
        log.warning(
            "this OpenSSL build gives no access to ticket keys: each worker has its own, "
            "and a session resumes only on the worker that made it"
        )
    config = _call(prepare) if prepare is not None else None
    if sock is None:
        assert port is not None
        if reuse_port is None:
            reuse_port = sys.platform == "linux"  # where the kernel balances the sockets
        sockets = _listeners(host, port, workers, backlog, reuse_port)
    else:
        sock.listen(backlog)
        sockets = [sock]
    try:
        host, port = sockets[0].getsockname()[:2]
        log.info(
            "listening on %s:%d with %d workers (%s)",
            f"[{host}]" if sockets[0].family == socket.AF_INET6 else host,
            port,
            workers,
            "a SO_REUSEPORT socket each" if len(sockets) > 1 else "one shared socket",
        )
        _Supervisor(
            worker_main,
            sockets,
            workers=workers,
            loop_factory=loop_factory,
            prepare=prepare,
            config=config,
            ticket_keys=ticket_keys,
            ticket_key_interval=ticket_key_interval,
            graceful_timeout=graceful_timeout,
        ).run()
    finally:
        if sock is None:
            for listener in sockets:
                listener.close()


def serve(
    client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    host: str | None = None,
    port: int | None = None,
    *,
    sock: socket.socket | None = None,
    workers: int = 1,
    context: SecureContext | None = None,
    limit: int = 2**16,
    backlog: int = 100,
    reuse_port: bool | None = None,
    loop: str | None = None,
    ticket_key_interval: float | None = 3600.0,
    graceful_timeout: float = 30.0,
    **options: Unpack[ServerOptions],
) -> None:
    """:func:`aiotls.start_server` in ``workers`` processes, until SIGTERM or SIGINT.

    Blocks (see :func:`supervise` for where it may be called, and the module's docstring
    for how the workers share the port, the ticket keys, restarts and reloads). Every
    worker is supervised, ``workers=1`` included, so one worker or many behave alike:
    restarted when it dies, reloaded on SIGHUP.

    ``client_connected_cb``, ``host``, ``port``, ``sock``, ``context``, ``limit``,
    ``backlog`` and the options are :func:`aiotls.start_server`'s. They are checked, and
    the context built, here before any worker starts, so a bad option raises from this
    call; on SIGHUP the context is built again from the options (re-reading ``key``,
    ``cert`` and other material given as a ``pathlib.Path``; a ``context=`` is kept as it
    is). ``ticket_keys``, if given, are the first shared keys.
    """
    if limit <= 0:
        raise ValueError("limit: must be positive")
    keys = options.get("ticket_keys")

    async def prepare() -> SecureContext:
        """Check the options with the front door itself, on a socket that never listens,
        and keep the context it built for the workers."""
        with socket.socket() as probe:
            server = await start_server(
                client_connected_cb,
                sock=probe,
                context=context,
                start_serving=False,
                **options,
            )
            server.close()
            await server.wait_closed()
        return server.context

    async def main(listener: socket.socket, channel: WorkerChannel[SecureContext]) -> None:
        server = await start_server(
            client_connected_cb,
            sock=listener,
            context=channel.config,
            limit=limit,
            backlog=backlog,
            **options,
        )
        await channel.serve(server)

    supervise(
        main,
        workers=workers,
        host=host,
        port=port,
        sock=sock,
        backlog=backlog,
        reuse_port=reuse_port,
        loop=loop,
        prepare=prepare,
        ticket_keys=bytes(keys) if isinstance(keys, bytearray) else keys,
        ticket_key_interval=ticket_key_interval,
        graceful_timeout=graceful_timeout,
    )
