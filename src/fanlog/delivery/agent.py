"""The delivery agent: a process of its own that delivers a live journal to its trackers.

A training process that logs to trackers starts one (:mod:`fanlog.delivery.client`) as
``python -m fanlog.delivery.agent``; the training process then only gates, normalizes and
appends to the journal, and no tracker library is ever imported into it. The agent follows
the journal as ``fanlog sync --follow`` does (:mod:`fanlog.delivery.follow`: the same code):
one thread per tracker, each from its cursor, each tracker's run open across batches.

The training process and the agent share one socket, the agent's stdin:

* the training process sends one JSON line, the *hello*: the journal, the run, the
  settings, and each tracker's declaration (its class, options and context, and what its
  ``prepare()`` settled there: :meth:`fanlog.backend.Backend.handoff`); later lines only
  wake the agent up (``flush()`` waits for it);
* the agent sends JSON lines, *events*: ``ready`` once the trackers are built, then what
  the user must hear of (errors, records refused for good) and read (``opened`` with a
  tracker's :meth:`~fanlog.backend.Backend.info`, such as MLflow's run id);
* end of file tells the agent that the training process let go: its destroy returned, or
  it died (``kill -9`` included). A forked child of the trainer may hold the socket open,
  so the agent also notices when its parent process is gone.

The agent stops once the run has ended (the journal's status) and every tracker has every
record, closing each tracker's run with the run's status; or, once the training process let
go, when it has delivered what the journal holds (closing the runs as ``killed`` when the
journal says the run never ended), or after ``agent_linger`` seconds without progress. It
runs in a session of its own, so a Ctrl-C in the terminal does not stop it before it has
delivered. A SIGTERM (a SLURM job ending) makes it give up sooner; its records stay in the
journal for ``fanlog sync``. It writes its log to ``agent.log`` beside the journal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fanlog.delivery.follow import (
    POLL_MAX,
    POLL_MIN,
    CursorBusyError,
    Event,
    Feed,
    Follower,
    Target,
    check_same_host,
    cursor_lock,
)
from fanlog.journal.layout import journal_label
from fanlog.journal.status import writer_is_live
from fanlog.pipeline import PipelineSettings
from fanlog.record import RunInfo

log = logging.getLogger("fanlog.agent")

STALL_REPORT_SECONDS = 1.0
"""A call stalled this long is written to the journal (at most half of ``down_after``)."""


class Agent:
    """Follows one journal for some trackers until everything is delivered or given up.

    `let_go(feed)` says whether the journal's writer has let go of the run (the training
    process ended or died); `event` is where followers report.
    """

    def __init__(
        self,
        journal_path: str,
        targets: Sequence[Target],
        run: RunInfo,
        settings: PipelineSettings,
        let_go: Callable[[Feed], bool],
        event: Event = lambda _: None,
    ) -> None:
        self.journal_path = journal_path
        self.targets = list(targets)
        self.run_info = run
        self.settings = settings
        self.let_go = let_go
        self.event = event
        self.feed: Feed | None = None
        self.followers: list[Follower] = []
        self._woken = threading.Event()

    def wake(self) -> None:
        self._woken.set()
        if self.feed is not None:
            self.feed.wake()

    def hurry(self) -> None:
        """A SIGTERM: give up sooner on trackers that make no progress."""
        if self.feed is not None:
            self.feed.hurry = True
        self.wake()

    def run(self) -> bool:
        """Deliver; True when every tracker got everything and its run is closed."""
        feed = self.feed = Feed(self.journal_path)
        try:
            check_same_host(feed.meta, self.journal_path)
            with self._locks():
                self.followers = [
                    Follower(feed, target, self.run_info, self.settings, self.event)
                    for target in self.targets
                ]
                for follower in self.followers:
                    follower.thread.start()
                self._watch(feed)
        finally:
            feed.close()
        return all(f.closed and f.delivered >= feed.last_seq for f in self.followers)

    @contextlib.contextmanager
    def _locks(self) -> Iterator[None]:
        label = journal_label(self.journal_path)
        rank_dir = os.path.dirname(self.journal_path)
        with contextlib.ExitStack() as stack:
            for target in self.targets:
                stack.enter_context(cursor_lock(rank_dir, target.name + label))
            yield

    def _watch(self, feed: Feed) -> None:
        """Poll the journal (more often right after a change), note stalled calls, notice
        when the writer lets go, until every follower is done or abandoned."""
        stall_after = min(STALL_REPORT_SECONDS, self.settings.down_after / 2)
        delay = POLL_MIN
        while True:
            active = [f for f in self.followers if not f.done]
            if not active:
                return
            changed = feed.poll()
            for follower in active:
                follower.check_stalled(stall_after)
            if not feed.released and self.let_go(feed):
                log.info(
                    "fanlog agent: the training process let go of the run (status %s)",
                    feed.meta.get("status"),
                )
                feed.release()
            if feed.finished and all(self._stuck(f) for f in active):
                for follower in active:  # a call that never returns: its thread is a daemon
                    log.warning(
                        "fanlog agent: %s has not answered a call for %.0f s; giving up",
                        follower.name,
                        follower.watch.stalled_for(),
                    )
                return
            delay = POLL_MIN if changed else min(POLL_MAX, delay * 1.5)
            self._woken.wait(delay)
            self._woken.clear()

    def _stuck(self, follower: Follower) -> bool:
        """Stalled in one call for longer than the run may wait once its writer let go."""
        linger = self.settings.agent_linger
        if self.feed is not None and self.feed.hurry:
            linger = min(linger, 10.0)
        return follower.watch.stalled_for() >= linger


# ---------------------------------------------------------------------------- the process
class Channel:
    """The agent's side of the socket it shares with the training process (its stdin)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.closed = False
        """End of file: the training process let go (or died)."""
        self._lock = threading.Lock()
        self._broken = False

    def hello(self) -> dict[str, Any]:
        line = self.reader.readline()
        if not line:
            raise EOFError("the training process closed the channel before its hello")
        return dict(json.loads(line))

    def send(self, event: dict[str, Any]) -> None:
        """One event line; nothing once the training process is gone."""
        if self._broken:
            return
        data = (json.dumps(event, default=str) + "\n").encode()
        with self._lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self._broken = True

    def listen(self, agent: Agent) -> None:
        """Read what the training process sends (wake-ups) until end of file."""
        try:
            for _ in self.reader:
                agent.wake()
        except OSError:
            pass
        self.closed = True
        agent.wake()


def build_targets(specs: Sequence[dict[str, Any]], event: Event) -> list[Target]:
    """Rebuild each tracker from its declaration; a tracker that cannot be built is reported
    (and marked ``failed`` in the journal by the caller), the others go on."""
    from fanlog.backend import _load
    from fanlog.options import BackendContext

    targets = []
    for spec in specs:
        try:
            cls = _load(spec["class"])
            options = cls.Options.model_validate_json(spec["options"])
            backend = cls(options, BackendContext(**spec["context"]))
            backend.take_handoff(spec.get("handoff") or {})
        except Exception as exc:  # noqa: BLE001 - reported to the training process
            log.error("fanlog agent: cannot build tracker %s: %r", spec["name"], exc)
            event({"event": "error", "backend": spec["name"], "error": repr(exc), "fatal": True})
            continue
        targets.append(Target(spec["name"], spec["slot"], backend))
    return targets


def _parent_let_go(channel: Channel, parent_pid: int) -> Callable[[Feed], bool]:
    def let_go(feed: Feed) -> bool:
        if os.getppid() != parent_pid:  # reparented: the training process is gone
            return True
        if channel.closed:  # destroy returned, or the socket was closed under it
            return feed.ended or not writer_is_live(feed.meta)
        return False

    return let_go


def follow_journal(path: str, to: str, cursor: str | None = None, **options: Any) -> bool:
    """``fanlog sync --follow``: deliver the live journal under `path` to tracker `to` as
    records arrive, until its run has ended (or its writer died) and everything is
    delivered. The agent's code, run by hand on the host that writes the journal. True when
    the tracker got every record and its run is closed."""
    from fanlog.delivery.sync import SyncError, make_backend
    from fanlog.journal import Journal
    from fanlog.journal.layout import journal_paths

    found = journal_paths(path)
    if len(found) != 1:
        raise SyncError(
            f"--follow follows one journal; {path!r} holds {len(found)}: name one of "
            f"them (or its rank directory)"
        )
    journal_path = found[0]
    journal = Journal(journal_path)
    try:
        meta, slots = journal.meta(), journal.backends()
    finally:
        journal.close()
    check_same_host(meta, journal_path)
    name = cursor or (to if to in slots else f"sync:{to}")
    if name in meta.get("backends", []) and meta.get("delivery") != "agent" and writer_is_live(meta):
        raise SyncError(
            f"process {meta.get('pid')} delivers this run to {name!r} itself; follow "
            f"it with another --cursor, or sync after the run ended"
        )
    backend = make_backend(to, journal_path, options)
    backend.prepare()
    run = RunInfo(
        run_id=str(meta.get("run_id")),
        run_name=str(meta.get("run_name") or meta.get("run_id")),
        rank=int(meta.get("rank", 0)),
        world_size=int(meta.get("world_size", 1)),
        run_dir=os.path.dirname(journal_path),
        experiment_name=meta.get("experiment_name"),
        resumed=True,
    )
    agent = Agent(
        journal_path,
        [Target(name, slots.get(name), backend)],
        run,
        PipelineSettings(),
        lambda feed: not writer_is_live(feed.meta),
    )
    try:
        return agent.run()
    except CursorBusyError as exc:
        raise SyncError(str(exc)) from None


def main() -> int:
    """``python -m fanlog.delivery.agent``, started by the training process only."""
    try:
        sock = socket.socket(fileno=0)
    except OSError:
        print(
            "fanlog's delivery agent is started by a training process; to follow a journal "
            "by hand, run `fanlog sync --follow RUN --to TRACKER`",
            file=sys.stderr,
        )
        return 2
    channel = Channel(sock)
    hello = channel.hello()
    sys.path[:0] = [p for p in hello.get("sys_path", []) if p not in sys.path]
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s agent[{os.getpid()}] %(levelname)s %(message)s",
    )
    settings = PipelineSettings(**hello["settings"])
    run = RunInfo(**hello["run"])
    journal_path = hello["journal"]
    targets = build_targets(hello["targets"], channel.send)
    failed = sorted({spec["name"] for spec in hello["targets"]} - {t.name for t in targets})
    _mark_failed(journal_path, failed)
    agent = Agent(
        journal_path, targets, run, settings, _parent_let_go(channel, int(hello["parent_pid"])), channel.send
    )
    signal.signal(signal.SIGTERM, lambda *_: agent.hurry())
    signal.signal(signal.SIGINT, lambda *_: agent.hurry())
    threading.Thread(target=channel.listen, args=(agent,), name="fanlog-agent-channel", daemon=True).start()
    log.info("fanlog agent: delivering %s to %s", journal_path, ", ".join(t.name for t in targets))
    channel.send({"event": "ready", "pid": os.getpid(), "failed": failed})
    try:
        complete = agent.run()
    except (CursorBusyError, RuntimeError) as exc:
        log.error("fanlog agent: %s", exc)
        channel.send({"event": "error", "backend": "", "error": repr(exc), "fatal": True})
        return 1
    log.info("fanlog agent: done (%s)", "everything delivered" if complete else "some records left")
    sys.stderr.flush()
    if any(not f.done for f in agent.followers):
        os._exit(0 if complete else 1)  # a tracker call that never returned: do not wait for it
    return 0 if complete and not failed else 1


def _mark_failed(journal_path: str, names: Sequence[str]) -> None:
    if not names:
        return
    from fanlog.journal import Journal

    journal = Journal(journal_path)
    try:
        for name in names:
            journal.set_health(
                name,
                "failed",
                error="the delivery agent could not build it (see agent.log beside the journal)",
            )
    finally:
        journal.close()


if __name__ == "__main__":
    sys.exit(main())
