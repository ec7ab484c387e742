"""One contender in the mixed lock harness: real Dango's ``DbtLock`` or ours, in a loop.

    python mixed_holder.py dango|ours PROJECT SECONDS HOLD_S [PAUSE_S]

Takes the lock, holds it ``HOLD_S`` while checking every 20 ms that ``dbt.lock.json`` still names
this process (holder info lost = a count), lets go, pauses ``PAUSE_S`` (0: re-queues at once, the
way back-to-back dango-dagster runs do), until ``SECONDS`` have passed. Prints one JSON line per
hold: who, PID, when it asked, got and released the lock (wall clock), and how often its info was
missing or foreign while it held the lock.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _info_pid(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(kind: str, project: str, seconds: float, hold: float, pause: float) -> None:
    root = Path(project)
    info = root / ".dango" / "state" / "dbt.lock.json"
    # Imported before the clock starts: importing Dango takes seconds, and is no wait.
    if kind == "dango":
        from dango.utils.dbt_lock import DbtLock as Lock
    else:
        from dango_dagster.lock import DbtLock as Lock
    end = time.time() + seconds
    n = 0
    while time.time() < end:
        n += 1
        lock = Lock(root, source=f"{kind}-harness", operation=f"hold {n}")
        asked = time.time()
        lock.acquire(timeout=120)
        got = time.time()
        lost = 0
        # Dango writes its info right after flock; give its write a moment before the first check.
        time.sleep(0.01)
        while time.time() < got + hold:
            if _info_pid(info) != os.getpid():
                lost += 1
            time.sleep(0.02)
        released = time.time()
        lock.release()
        print(
            json.dumps(
                {"who": kind, "pid": os.getpid(), "asked": asked, "got": got,
                 "released": released, "lost": lost}
            ),
            flush=True,
        )  # fmt: skip
        if pause:
            time.sleep(pause)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], float(args[2]), float(args[3]), float(args[4]) if len(args) > 4 else 0)
