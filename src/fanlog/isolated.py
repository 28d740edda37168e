"""Run a tracker library in a child process of its own, with call timeouts and CPU accounting.

Some tracker libraries keep one global state per process, write into the current working
directory, or take minutes in calls that cannot be interrupted. A backend for such a
library does not import it: it starts a :class:`Worker`, a child Python process
(``python -m fanlog.isolated <module:Handler> ...``) in a working directory of the backend's
choosing, and sends it requests. The child creates ``Handler()`` at the first request and
answers each ``(op, payload)`` with ``Handler.<op>(payload)``; the two talk over a pair of
pipes, in pickles. So each run gets a clean library state, and the user's working directory
is never touched.

What the parent gets:

- a timeout on every call: a child that does not answer in time is stopped, and the call
  raises :class:`WorkerError` with the tail of the child's log;
- the child's CPU time (:meth:`Worker.cpu_seconds`), so that a dispatcher tells a child that
  computes from one that hangs (see ``Backend.work_clock``);
- a child that outlives nothing: when the parent goes away (``kill -9``) the pipe closes,
  the child calls ``Handler.parent_gone()`` if there is one (to save what it has), and exits.

After it answers `final_op`, the child exits at once (``os._exit``), skipping the slow
teardown of large libraries.
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import threading
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from fanlog.backend import process_cpu_seconds

LOG_NAME = "worker.log"
"""The child's stdout and stderr, in its working directory."""


class WorkerError(RuntimeError):
    """The worker failed or went away; the message carries its traceback or the tail of its log."""


class Worker:
    """A child process serving `handler` (``"module:Class"``) from `workdir`; calls are request/reply.

    Args:
        handler: the class the child instantiates, as ``"package.module:Class"``.
        workdir: the child's working directory (created by the caller).
        name: what messages call the worker (the library's name).
        call_timeout: seconds a call waits for its answer unless it gives its own.
        env: variables set for the child on top of this process's environment.
        final_op: the request after which the child exits.
    """

    def __init__(
        self,
        handler: str,
        workdir: str,
        *,
        name: str,
        call_timeout: float,
        env: Mapping[str, str] | None = None,
        final_op: str | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.call_timeout = call_timeout
        self.log_path = os.path.join(workdir, LOG_NAME)
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        command = [
            sys.executable,
            "-m",
            __name__,
            handler,
            str(to_child_r),
            str(from_child_w),
            final_op or "",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=workdir,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(to_child_r, from_child_w),
                start_new_session=True,
            )
        os.close(to_child_r)
        os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)
        self._lock = threading.Lock()

    def call(self, op: str, payload: Any, timeout: float | None = None) -> Any:
        """Send one request and wait for its reply; a dead or silent worker is a WorkerError."""
        with self._lock:
            try:
                self._send.send_bytes(pickle.dumps((op, payload)))
                if not self._recv.poll(timeout or self.call_timeout):
                    self.stop()
                    raise WorkerError(f"{self.name} worker gave no answer to {op!r} in time; {self._tail()}")
                status, result = pickle.loads(self._recv.recv_bytes())
            except (EOFError, OSError) as exc:
                code = self.process.poll()
                raise WorkerError(f"{self.name} worker exited (code {code}); {self._tail()}") from exc
        if status == "error":
            raise WorkerError(f"{self.name} {op} failed:\n{result}")
        return result

    def cpu_seconds(self) -> float | None:
        """CPU seconds the child has used (None where that cannot be read)."""
        return process_cpu_seconds(self.process.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """Close the pipes and wait for the worker; kill it (by PID) if it does not exit."""
        for conn in (self._send, self._recv):
            try:
                conn.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def _tail(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                text = log.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            text = ""
        return f"worker log {self.log_path}:\n{text}" if text else f"see {self.log_path}"


# ---------------------------------------------------------------------------- the child
def serve(handler: str, read_fd: int, write_fd: int, final_op: str = "") -> None:
    """Answer requests until the parent closes the pipe or sends `final_op`."""
    receive = Connection(read_fd, writable=False)
    send = Connection(write_fd, readable=False)
    state: Any = None
    while True:
        try:
            op, payload = pickle.loads(receive.recv_bytes())
        except EOFError:  # the parent went away without a final request: keep what we have
            parent_gone = getattr(state, "parent_gone", None)
            if parent_gone is not None:
                parent_gone()
            return
        try:
            if op.startswith("_"):
                raise ValueError(f"{op!r} is not a request a worker answers")
            if state is None:
                state = _load(handler)()
            result = getattr(state, op)(payload)
            send.send_bytes(pickle.dumps(("ok", result)))
        except Exception:
            send.send_bytes(pickle.dumps(("error", traceback.format_exc())))
        if op == final_op:  # everything is written and answered
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def _load(handler: str) -> type:
    module, _, name = handler.partition(":")
    return getattr(importlib.import_module(module), name)


if __name__ == "__main__":
    # stdout is the log file; requests come on the fds given as arguments.
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "")
