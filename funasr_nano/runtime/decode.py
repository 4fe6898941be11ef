"""Greedy decoding over a batch of prompt embeddings, with per-row stopping.

Rows are left-padded to a common length; each row gets its own RoPE positions (its first real
row is position 0, as in the reference's batched path) and pads are masked out as keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlx.core as mx

from .numerics import check_finite


@dataclass(frozen=True)
class RepetitionGuard:
    """Stops a row caught in a decoding loop. Off by default: the reference has no such guard.

    A row stops when its last token repeats `max_token_repeats` times in a row, or when an
    n-gram (2 <= n <= max_ngram) repeats `max_ngram_repeats` times back to back. The repeats
    beyond the first copy are dropped from the output.
    """

    max_token_repeats: int = 16
    max_ngram: int = 8
    max_ngram_repeats: int = 6

    def check(self, tokens: list[int]) -> int | None:
        """Return how many trailing tokens to drop if `tokens` ends in a loop, else None."""
        r = self.max_token_repeats
        if len(tokens) >= r and len(set(tokens[-r:])) == 1:
            return r - 1
        for n in range(2, self.max_ngram + 1):
            span = n * self.max_ngram_repeats
            if len(tokens) < span:
                break
            tail = tokens[-span:]
            gram = tail[:n]
            if len(set(gram)) > 1 and tail == gram * self.max_ngram_repeats:
                return n * (self.max_ngram_repeats - 1)
        return None


def as_guard(guard) -> RepetitionGuard | None:
    if guard is None or guard is False:
        return None
    if guard is True:
        return RepetitionGuard()
    if isinstance(guard, RepetitionGuard):
        return guard
    raise TypeError(f"repetition_guard must be None, bool or RepetitionGuard, got {type(guard).__name__}")


@dataclass
class DecodeResult:
    tokens: list          # per row: generated ids (stop token excluded)
    stop_reasons: list    # per row: "eos", "max_new_tokens" or "repetition"
    steps: int            # decoder calls after the prefill
    prefill_s: float
    decode_s: float
    path: str = "growing-cache"  # or "compiled": which decode step ran (asr.policy chose it)


def left_pad(rows: list[mx.array]) -> tuple[mx.array, mx.array | None, mx.array | None]:
    """Stack [S_i, D] rows into [B, S_max, D] left-padded with zeros.

    Returns (embeds, key_valid [B, S_max] bool or None, first positions [B] int32 or None);
    None when no row is padded, which selects the unmasked fast path.
    """
    lengths = [int(r.shape[0]) for r in rows]
    s_max = max(lengths)
    if all(n == s_max for n in lengths):
        return mx.stack(rows), None, None
    padded = [mx.pad(r, [(s_max - r.shape[0], 0), (0, 0)]) if r.shape[0] < s_max else r for r in rows]
    pads = mx.array([s_max - n for n in lengths], dtype=mx.int32)
    valid = mx.arange(s_max)[None, :] >= pads[:, None]
    return mx.stack(padded), valid, -pads


def _prefill_mask(valid: mx.array) -> mx.array:
    s = valid.shape[1]
    causal = mx.tril(mx.ones((s, s), dtype=mx.bool_))
    # A pad row may attend to itself only: keeps its (unused) output finite, so that
    # multiplying it by a zero attention weight later cannot produce NaN.
    return (causal[None] & valid[:, None, :]) | mx.eye(s, dtype=mx.bool_)[None]


def greedy_decode(asr, embeds, valid, offsets, max_new_tokens, stop_ids, ignore_eos=False,
                  guard=None) -> DecodeResult:
    """Greedy decoding for a [B, S, D] batch; see `iter_decode`."""
    gen = iter_decode(asr, embeds, valid, offsets, max_new_tokens, stop_ids, ignore_eos, guard)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def iter_decode(asr, embeds: mx.array, valid: mx.array | None, offsets: mx.array | None,
                max_new_tokens: int, stop_ids, ignore_eos: bool = False, guard=None):
    """Generator form of greedy decoding: yields (row, token) for each kept token as soon as
    it is known and returns a DecodeResult."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    guard = as_guard(guard)
    b, s, _ = embeds.shape
    cache = asr.new_cache()
    stop = set(stop_ids)

    t0 = time.perf_counter()
    token = _prefill(asr, embeds, valid, offsets, cache)
    prefill_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    tokens = [[] for _ in range(b)]
    reasons = [None] * b
    steps = n_done = 0
    if max_new_tokens > 1 and asr.policy.use_compiled(b, asr.plan.quantized):
        step = _CompiledStep(asr, cache, valid, offsets, s + max_new_tokens)
    else:
        step = _GrowingStep(asr.net.llm, cache, valid, offsets)
    del cache  # the compiled step copied it into its fixed buffers
    while True:
        nxt = None
        if steps + 1 < max_new_tokens:
            nxt = step(token, s + steps)
            # Queue the next step before reading this one, so the host never idles the device.
            mx.async_eval(nxt)
            steps += 1
        n_done += yield from _keep(token.tolist(), tokens, reasons, stop, ignore_eos, guard, max_new_tokens)
        if n_done == b or nxt is None:
            break
        token = nxt
    if nxt is not None:
        mx.eval(nxt)
    decode_s = time.perf_counter() - t0
    reasons = [r or "max_new_tokens" for r in reasons]
    return DecodeResult(tokens, reasons, steps, prefill_s, decode_s, step.path)


def _prefill(asr, embeds, valid, offsets, cache) -> mx.array:
    """The prompt through the decoder into ``cache``; the first token of every row (evaluated)."""
    llm = asr.net.llm
    s = embeds.shape[1]
    if valid is None:
        h = llm.hidden(embeds.astype(asr.dtype), cache, positions=0, mask="causal" if s > 1 else None)
    else:
        h = llm.hidden(embeds.astype(asr.dtype), cache, positions=offsets, mask=_prefill_mask(valid)[:, None])
    logits = llm.logits(h[:, -1])  # left padding: the last row is real for every batch row
    check_finite(logits, "logits", asr.preset)  # fp16 overflow -> clear error
    token = mx.argmax(logits, axis=-1)
    mx.eval(token)
    return token


class _GrowingStep:
    """One token per call through the growing key/value cache (mlx-lm's loop)."""

    path = "growing-cache"

    def __init__(self, llm, cache, valid, offsets):
        self.llm, self.cache, self.valid, self.offsets = llm, cache, valid, offsets

    def __call__(self, token: mx.array, pos: int) -> mx.array:
        if self.valid is None:
            positions, mask = pos, None
        else:
            positions = self.offsets + pos
            self.valid = mx.concatenate([self.valid, mx.ones((self.valid.shape[0], 1), dtype=mx.bool_)], axis=1)
            mask = self.valid[:, None, None, :]
        h = self.llm.hidden(self.llm.embed(token[:, None]), self.cache, positions=positions, mask=mask)
        return mx.argmax(self.llm.logits(h[:, -1]), axis=-1)


class _CompiledStep:
    """One token per call through the compiled fixed-buffer step (`compiled_step`), the prefill's
    cache copied into buffers of ``max_len`` positions."""

    path = "compiled"

    def __init__(self, asr, cache, valid, offsets, max_len: int):
        from .cache import StaticKV

        kv = StaticKV(cache, max_len)
        b, s = cache[0].state[0].shape[0], cache[0].offset
        self.kv_valid = mx.ones((b, kv.length), dtype=mx.bool_)
        self.base_pos = mx.zeros((b,), dtype=mx.int32)
        if valid is not None:
            self.kv_valid[:, :s] = valid
            self.base_pos = offsets.astype(mx.int32)
        self.step_fn = asr.decode_step_fn()
        self.keys, self.values = kv.keys, kv.values

    def __call__(self, token: mx.array, pos: int) -> mx.array:
        nxt, self.keys, self.values = self.step_fn(token.astype(mx.int32), mx.array([pos], dtype=mx.int32),
                                                   self.base_pos, self.kv_valid, self.keys, self.values)
        return nxt


def _keep(row_tokens, tokens, reasons, stop, ignore_eos, guard, max_new_tokens):
    """Append one step's token to every live row (yielding (row, token) for each kept one), stop
    rows at EOS, a repetition or the length limit; returns how many rows stopped."""
    n_done = 0
    for i, t in enumerate(row_tokens):
        if reasons[i] is not None:
            continue
        if not ignore_eos and t in stop:
            reasons[i] = "eos"
            n_done += 1
            continue
        tokens[i].append(t)
        yield i, t
        if guard is not None:
            drop = guard.check(tokens[i])
            if drop:
                del tokens[i][-drop:]
                reasons[i] = "repetition"
                n_done += 1
                continue
        if len(tokens[i]) >= max_new_tokens:
            reasons[i] = "max_new_tokens"
            n_done += 1
    return n_done
