"""Start ``lockproc.py`` processes and read their event lines with a timeout."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

SCRIPT = Path(__file__).with_name("lockproc.py")


class LockProc:
    """One ``lockproc.py`` process; ``expect`` waits for its next event line of a given kind."""

    def __init__(self, mode: str, *args: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), mode, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)
        self.proc.stdout.close()  # here, not in cleanup: closing it while we read would block

    def expect(self, kind: str, timeout: float = 30.0) -> list[str]:
        """The fields of the next line starting with ``kind`` (earlier lines are kept in seen)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                msg = f"no {kind!r} from {self.pid} in {timeout} s: {self.seen}"
                raise AssertionError(msg) from None
            if line is None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"{self.pid} exited before {kind!r}: {self.seen}\n{err}")
            self.seen.append(line)
            if line.split(" ", 1)[0] == kind:
                return line.split()[1:]

    def let_go(self, timeout: float = 30.0) -> int:
        """Close stdin: a holder releases and exits."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        for stream in (self.proc.stdin, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


class Spawner:
    """Starts ``LockProc`` processes and kills whatever is left of them at the end of a test."""

    def __init__(self) -> None:
        self.procs: list[LockProc] = []

    def __call__(self, mode: str, *args: object) -> LockProc:
        proc = LockProc(mode, *args)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Spawner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for proc in self.procs:
            proc.cleanup()


def spawner_fixture() -> Iterator[Spawner]:
    """Body of the ``spawn`` fixture: ``spawn = pytest.fixture(spawner_fixture, name="spawn")``."""
    with Spawner() as spawner:
        yield spawner
