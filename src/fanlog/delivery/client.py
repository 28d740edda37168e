"""The training process's side of the delivery agent: which trackers it takes, starting it,
hearing from it, and restarting it if it dies.

``delivery="auto"`` gives the agent every tracker that needs delivery when
each one can be rebuilt in another process from its declaration (:func:`agent_spec`) and
the journal can be read by another process (not in exclusive mode, which a network file
system needs); otherwise the run delivers from threads, as ``delivery="thread"`` does. A
backend that must write from the training process (``runs_in_agent = False``: the console)
keeps its thread either way.

The agent is started with ``subprocess.Popen`` (never a fork of the training process, which
may hold CUDA contexts and threads), in a session of its own, its stdin a socket shared with
this process: see :mod:`fanlog.delivery.agent` for what travels on it. One daemon thread here
reads the agent's events; it blocks on the socket, so it costs nothing while the agent is
quiet, and it reaps the agent when the socket closes, so the agent never stays a zombie.
If the agent dies while the run is live, it is started again (at most
:data:`MAX_RESTARTS` times) and goes on from the cursors in the journal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fanlog.backend import Backend, backend_type
from fanlog.options import BackendContext, jsonable
from fanlog.record import RunInfo

if TYPE_CHECKING:
    from fanlog.pipeline import PipelineSettings

log = logging.getLogger(__name__)

DELIVERY_MODES = ("auto", "agent", "thread")
MAX_RESTARTS = 3
"""Times an agent that died while its run was live is started again."""
AGENT_LOG = "agent.log"
"""The agent's log, beside the journal."""

_live: weakref.WeakSet[AgentProcess] = weakref.WeakSet()


class AgentReport(Exception):  # noqa: N818 - a report, not raised
    """An error the delivery agent met, as it reported it: its repr is the original's, so
    ``delivery_errors()`` reads the same in both delivery modes. `seq` names a refused record."""

    def __init__(self, text: str, seq: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.seq = seq

    def __repr__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


class NotPortable(ValueError):
    """A backend that cannot be rebuilt in another process from its declaration."""


def agent_spec(name: str, slot: int, backend: Backend) -> dict[str, Any]:
    """What the agent needs to rebuild `backend`: its class, options, context and handoff.

    Raises :class:`NotPortable` (saying why) for a backend that is not registered under its
    name (a test's or a script's own class), whose class cannot be imported by another
    process, whose options cannot be written as JSON (a credential object, a stream), or
    that is not built from its declaration alone (a rebuild here differs from it).
    """
    cls = type(backend)
    where = f"{cls.__module__}:{cls.__qualname__}"
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise NotPortable(f"{name}: its class {where} cannot be imported by another process")
    try:
        registered = backend_type(backend.name) is cls
    except (ValueError, TypeError, ImportError):
        registered = False
    if not registered:
        raise NotPortable(f"{name}: {where} is not the tracker registered as {backend.name!r}")
    spec = backend.spec()
    if spec["unserialisable"]:
        raise NotPortable(f"{name}: option(s) {spec['unserialisable']} cannot leave this process")
    context = dataclasses.asdict(backend.context)
    handoff = backend.handoff()
    if not jsonable(context) or not jsonable(handoff):
        raise NotPortable(f"{name}: its context or prepared state cannot be written as JSON")
    try:
        options = backend.options.model_dump_json()
        rebuilt = cls(cls.Options.model_validate_json(options), BackendContext(**context))
    except Exception as exc:  # noqa: BLE001 - any failure means: keep it in this process
        raise NotPortable(f"{name}: it cannot be rebuilt from its declaration ({exc!r})") from exc
    if rebuilt.spec() != spec:
        raise NotPortable(f"{name}: a rebuild from its declaration differs from it")
    return {
        "name": name,
        "slot": slot,
        "class": where,
        "options": options,
        "context": context,
        "handoff": handoff,
    }


def plan(
    setting: str, candidates: Sequence[tuple[str, int, Backend]], exclusive: bool
) -> tuple[list[dict[str, Any]], str]:
    """The agent's trackers (their specs; [] for thread delivery) and why, in words.

    `candidates` are the trackers that need delivery and may run in the agent. An explicit
    ``delivery="agent"`` with a tracker that cannot be rebuilt is a ValueError that names it.
    """
    if setting not in DELIVERY_MODES:
        raise ValueError(f"delivery must be one of {DELIVERY_MODES}; got {setting!r}")
    if setting == "thread":
        return [], "delivery='thread'"
    if not candidates:
        return [], "no tracker to deliver to from another process"
    if exclusive:
        return [], (
            "the journal is on a network file system (exclusive mode): another "
            "process cannot read it while the run is live"
        )
    specs, refused = [], []
    for name, slot, backend in candidates:
        try:
            specs.append(agent_spec(name, slot, backend))
        except NotPortable as exc:
            refused.append(str(exc))
    if refused:
        if setting == "agent":
            raise ValueError("delivery='agent', but " + "; ".join(refused) + " (use delivery='thread')")
        return [], "; ".join(refused)
    return specs, f"delivery={setting!r}"


class AgentProcess:
    """One run's delivery agent, as the training process sees it.

    `on_event(event)` is called on the reader thread for each event (see
    :mod:`fanlog.delivery.agent`), and with ``{"event": "gone", ...}`` once the agent has
    died for good (restarts used up, or it could not be started again).
    """

    def __init__(
        self,
        journal_path: str,
        info: RunInfo,
        settings: PipelineSettings,
        specs: list[dict[str, Any]],
        on_event: Callable[[dict[str, Any]], None],
    ) -> None:
        self.journal_path = journal_path
        self.info = info
        self.settings = settings
        self.specs = specs
        self.on_event = on_event
        self.log_path = os.path.join(os.path.dirname(journal_path), AGENT_LOG)
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.gone = False
        """The agent died and was not started again: its trackers are down."""
        self.ready = threading.Event()
        self.failed: list[str] = []
        """Trackers the agent could not build (from its ``ready`` event)."""
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._letting_go = False
        self._owner = os.getpid()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # ------------------------------------------------------------ starting
    def start(self, resumed: bool = False) -> None:
        """Start the agent and send it the hello (raises OSError if it cannot start)."""
        mine, theirs = socket.socketpair()
        info = dataclasses.replace(self.info, resumed=True) if resumed else self.info
        hello = {
            "journal": self.journal_path,
            "run": dataclasses.asdict(info),
            "settings": dataclasses.asdict(self.settings),
            "targets": self.specs,
            "parent_pid": os.getpid(),
            "sys_path": [p for p in sys.path if p],
        }
        try:
            with open(self.log_path, "ab") as log_file:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "fanlog.delivery.agent"],
                    stdin=theirs.fileno(),
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                    start_new_session=True,
                    env=_agent_environment(),
                    close_fds=True,
                )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self._sock = mine
        _live.add(self)
        self.ready.clear()
        self._send(json.dumps(hello, default=str))
        threading.Thread(
            target=self._listen, args=(mine, self.process), daemon=True, name="fanlog-agent-events"
        ).start()
        log.debug("fanlog: delivery agent %d started for %s", self.process.pid, self.journal_path)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the agent has built its trackers (strict mode does, at start)."""
        return self.ready.wait(timeout)

    # ------------------------------------------------------------ talking
    def wake(self) -> None:
        """Ask the agent to look at the journal now (flush and destroy wait for it)."""
        self._send("wake")

    def _send(self, line: str) -> None:
        sock = self._sock
        if sock is None or self._letting_go:
            return
        with self._send_lock:
            try:
                sock.sendall(line.encode() + b"\n")
            except OSError:
                pass  # the agent is gone; the reader thread hears of it

    def _listen(self, sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
        """The reader thread: events until the agent closes the socket, then reap it."""
        reader = sock.makefile("rb")
        try:
            for line in reader:
                self._dispatch(line)
        except (OSError, ValueError):
            pass
        returncode = process.wait()  # reaped here: never a zombie
        if os.getpid() != self._owner:
            return
        with self._send_lock:
            if self._sock is sock:
                self._sock = None
        sock.close()
        if self._letting_go:
            return
        self._restart(returncode)

    def _dispatch(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if event.get("event") == "ready":
            self.failed = list(event.get("failed") or [])
            self.ready.set()
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - the reader thread must live on
            log.exception("fanlog: error while handling the agent's event %r", event)

    def _restart(self, returncode: int) -> None:
        """The agent died while its run was live: start another one (it resumes from the
        cursors), up to MAX_RESTARTS times."""
        message = (
            f"the delivery agent (pid {self.pid}) exited with code {returncode} while the "
            f"run was live; see {self.log_path}"
        )
        if self.restarts < MAX_RESTARTS:
            self.restarts += 1
            try:
                self.start(resumed=True)
            except OSError as exc:
                message += f"; it could not be started again ({exc})"
            else:
                self.on_event({"event": "restarted", "message": message + "; started again"})
                return
        else:
            message += f"; it was started again {MAX_RESTARTS} times already"
        self.gone = True
        self.ready.set()
        self.on_event(
            {"event": "gone", "message": message + "; the records stay in the journal for `fanlog sync`"}
        )

    # ------------------------------------------------------------ ending
    def let_go(self, deadline: Callable[[], float]) -> bool:
        """Tell the agent the run is over (end of file), and wait until `deadline()` (a
        time.monotonic() value, which a signal may bring forward) for it to exit. True if it
        exited; else it goes on alone."""
        self._letting_go = True
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_WR)  # the reader thread keeps its side open
            except OSError:
                pass
        process = self.process
        if process is None:
            return True
        while process.poll() is None:
            remaining = deadline() - time.monotonic()
            if remaining <= 0:
                return False
            try:
                process.wait(min(remaining, 0.05))
            except subprocess.TimeoutExpired:
                pass
        return True


def _agent_environment() -> dict[str, str]:
    """The training process's environment, with fanlog importable from where it runs."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package_parent = os.path.dirname(root)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return env


def _forget_after_fork() -> None:
    """In a forked child: the agents' sockets are the parent's. Drop them without touching
    them (the child never talks to an agent, nor reaps one)."""
    for agent in list(_live):
        sock, agent._sock = agent._sock, None
        agent._letting_go = True
        if sock is not None:
            try:
                os.close(sock.detach())
            except OSError:
                pass
    _live.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
