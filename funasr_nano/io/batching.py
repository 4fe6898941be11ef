"""Grouping many clips into batches: sort by duration, fill each batch up to a budget of seconds.

This is the reference's ``batch_size_s`` idea (FunASR sorts VAD segments by length and starts a
new batch when the accumulated milliseconds would pass ``batch_size_s``). Here the budget counts
*padded* seconds, ``rows x longest row``, because that is what a padded batch really computes
and holds in memory; since the clips are sorted first, padded and summed seconds differ little.
A second limit caps the number of rows (``--batch-size``).
"""

from __future__ import annotations

from typing import Sequence

DEFAULT_BATCH_SECONDS = 300.0  # the reference's default batch_size_s
DEFAULT_BATCH_SIZE = 16


def plan_batches(durations: Sequence[float], max_seconds: float = DEFAULT_BATCH_SECONDS,
                 max_size: int = DEFAULT_BATCH_SIZE, descending: bool = True) -> list[list[int]]:
    """Indices of `durations` grouped into batches.

    Items are sorted by duration (longest first by default, so the largest batch shape, and
    with it peak memory, shows up at the start) and consecutive items share a batch while
    ``len(batch) * longest <= max_seconds`` and ``len(batch) <= max_size``. An item longer than
    `max_seconds` gets a batch of its own. Every index appears exactly once; ties keep input order.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    order = sorted(range(len(durations)), key=lambda i: (-durations[i] if descending else durations[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0.0
    for i in order:
        d = max(float(durations[i]), 0.0)
        new_longest = max(longest, d)
        if cur and (len(cur) + 1 > max_size or (len(cur) + 1) * new_longest > max_seconds):
            batches.append(cur)
            cur, new_longest = [], d
        cur.append(i)
        longest = new_longest
    if cur:
        batches.append(cur)
    return batches


def chunk_by_seconds(durations: Sequence[float], chunk_seconds: float) -> list[list[int]]:
    """Split indices, in the given order, into consecutive runs of about `chunk_seconds` of audio
    (each run at least one item). Used to bound how much decoded audio is held at once."""
    chunks: list[list[int]] = []
    cur: list[int] = []
    total = 0.0
    for i, d in enumerate(durations):
        if cur and total + d > chunk_seconds:
            chunks.append(cur)
            cur, total = [], 0.0
        cur.append(i)
        total += max(float(d), 0.0)
    if cur:
        chunks.append(cur)
    return chunks
