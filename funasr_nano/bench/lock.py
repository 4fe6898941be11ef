"""One benchmark run at a time per results folder: an advisory lock file (``flock``).

Two ``funasr-nano bench`` runs writing one ``results/`` at once would overwrite each other's result
files (asv rewrites a commit's whole file) and time each other's load. The lock is an ``flock`` on
``<results>/.bench.lock``: the kernel drops it when the holder dies, however it dies, so a killed
run never leaves a stale lock. The asv process a run starts inherits the locked file (``pass_fds``),
so the lock stays held while that asv process lives, even when the runner itself was SIGKILLed.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

LOCK_NAME = ".bench.lock"


class Busy(RuntimeError):
    pass


class BenchLock:
    def __init__(self, folder: Path, what: str = "", name: str = LOCK_NAME):
        self.path = Path(folder) / name
        self.what = what
        self.fd: int | None = None

    def holder(self) -> str:
        try:
            d = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            return f"pid {d.get('pid')} since {d.get('since')}: {d.get('what')}"
        except (OSError, ValueError):
            return "unknown process"

    def acquire(self, wait: bool = False) -> "BenchLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                os.close(fd)
                raise Busy(f"another benchmark run holds {self.path} ({self.holder()}, or an asv process it "
                           "started); wait for it to end, or pass --wait to queue behind it") from None
            print(f"[bench] waiting for the run holding {self.path} ({self.holder()})", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                 "what": self.what}).encode())
        os.set_inheritable(fd, True)
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # the lock goes with the last descriptor (children may still hold one)
            self.fd = None

    def __enter__(self):
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc):
        self.release()
