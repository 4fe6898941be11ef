"""Helpers shared by the worker backends: memory counters and a timing streamer for HF generate."""

from __future__ import annotations

import resource
import sys
import time


def rss_high_water_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    hw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(hw if sys.platform == "darwin" else hw * 1024)


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


class TokenClock:
    """A transformers streamer that records when generate() hands over each new token.

    generate() calls ``put`` once with the prompt ids before the first forward, then once per new
    token after it was chosen (as a CPU tensor: on CUDA that copy synchronizes), then ``end``. So
    prefill = second put - first put and the per-token cost = (last put - second put) / (n - 1),
    measured inside one call instead of as a difference of two calls."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass

    def split(self) -> tuple[float, float, int]:
        """(prefill s, decode s after the first token, tokens after the first)."""
        if len(self.times) < 2:
            return float("nan"), float("nan"), 0
        return self.times[1] - self.times[0], self.times[-1] - self.times[1], len(self.times) - 2


def torch_sync(device: str):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def wrap_forward(module, device: str, acc: dict, key: str = "encoder"):
    """Time `module.forward` (synchronized) into acc[key]; returns the original for restoring."""
    orig = module.forward

    def fwd(*a, **k):
        torch_sync(device)
        t = time.perf_counter()
        out = orig(*a, **k)
        torch_sync(device)
        acc[key] = acc.get(key, 0.0) + time.perf_counter() - t
        return out

    module.forward = fwd
    return orig


def dist_version(name: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "absent"


def mlx_for_peer(device: str, blas: str):
    """(mlx.core, BLAS status) for an MLX peer's worker: with ``blas == "project"`` this project's
    OpenBLAS is given to MLX's CPU backend first (it must load before mlx.core), then the device."""
    status = None
    if blas == "project":
        import funasr_nano.runtime.blas as fb

        status = fb.setup()
    import mlx.core as mx

    mx.set_default_device(mx.cpu if device == "cpu" else mx.gpu)
    return mx, status
