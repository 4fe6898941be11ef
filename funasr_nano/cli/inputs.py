"""Input files (paths, folders, globs) and the progress bar."""

from __future__ import annotations

import glob
import os
import re
import sys
import time
from pathlib import Path


def expand_inputs(specs) -> tuple[list[str], list]:
    """Files, folders (recursive, audio extensions) and globs -> (files, FileResults for bad specs)."""
    from ..io.audio import AUDIO_EXTENSIONS
    from ..io.formats import FileResult

    files: list[str] = []
    bad: list = []

    def audio_in(folder: Path) -> list[str]:
        return sorted(str(f) for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)

    for spec in specs:
        p = Path(spec).expanduser()
        if p.is_dir():
            found = audio_in(p)
            if not found:
                bad.append(FileResult(spec, error=f"{spec}: folder holds no audio files "
                                                  f"({', '.join(AUDIO_EXTENSIONS[:5])}, ...)"))
            files.extend(found)
        elif p.exists() or os.path.lexists(p):
            files.append(str(p) if spec.startswith("~") else spec)
        elif glob.has_magic(spec):
            matches = sorted(glob.glob(os.path.expanduser(spec), recursive=True))
            found = []
            for m in matches:
                mp = Path(m)
                found.extend(audio_in(mp) if mp.is_dir() else [m])
            if not found:
                bad.append(FileResult(spec, error=f"{spec}: no files match"))
            files.extend(found)
        else:
            bad.append(FileResult(spec, error=f"{spec}: no such file"))
    seen, unique = set(), []
    for f in files:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, bad


def _file_error(path: str, e: BaseException) -> str:
    from ..io.audio import AudioError

    if isinstance(e, MemoryError):
        msg = "out of memory"
    elif isinstance(e, (AudioError, ValueError)):
        msg = str(e)
    else:
        msg = f"{type(e).__name__}: {e}"
    msg = " ".join(msg.split()) if "\n" not in msg else msg
    for prefix in (f"{path}: ", "audio array: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    msg = re.sub(r"^clip \d+: ", "", msg)
    return f"{path}: {msg}"


# ------------------------------------------------------------------------------------------
# progress
# ------------------------------------------------------------------------------------------


class Progress:
    def __init__(self, total: int, total_seconds: float, enabled: bool, stream=None):
        self.total, self.total_seconds, self.enabled = total, total_seconds, enabled
        self.stream = stream or sys.stderr
        self.done, self.seconds = 0, 0.0
        self.t0 = time.perf_counter()
        if enabled:
            self._draw()

    def update(self, files: int, seconds: float) -> None:
        self.done += files
        self.seconds += seconds
        if self.enabled:
            self._draw()

    def _draw(self) -> None:
        width = 24
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        wall = time.perf_counter() - self.t0
        speed = f"{self.seconds / wall:6.1f}x realtime" if wall > 0 and self.seconds else ""
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} files  {self.seconds:8.1f}/"
                          f"{self.total_seconds:.1f} s audio  {speed}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


