"""The one cache root everything the package writes lives under."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$FUNASR_NANO_CACHE``, else ``$XDG_CACHE_HOME/funasr_nano``, else ``~/.cache/funasr_nano``.

    Holds the safetensors conversions, the synthetic checkpoints, the BLAS shim and the peers'
    virtualenvs; nothing is written there at import time.
    """
    env = os.environ.get("FUNASR_NANO_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "funasr_nano"
