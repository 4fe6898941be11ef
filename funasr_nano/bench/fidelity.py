"""Fidelity of a reduced-precision model against a reference (float32) one, without transcripts.

* `teacher_forced_fidelity`: greedy-decode a pinned number of tokens with the reference, then
  feed both models the same prompt + reference tokens in one pass and compare the next-token
  distributions at every decoded position: top-1 agreement and KL(ref || candidate).
* `compare_transcripts`: free-running transcripts of both models and their character error rate
  (the package's one CER, `funasr_nano.evaluation.metrics.cer`: jiwer, whitespace removed).
* `peak_memory_of`: MLX peak memory of one call (mx.reset_peak_memory / mx.get_peak_memory).

Both models must be given the same audio; each runs its own frontend/encoder/adaptor, so the
comparison covers the whole network, not only the decoder.
"""

from __future__ import annotations

import math

import mlx.core as mx
from mlx.utils import tree_flatten


def prompt_embeddings(asr, audio, sample_rate=None, language=None, hotwords=None, itn: bool = True,
                      prev_text: str = "") -> mx.array:
    """The prompt embeddings [1, S, D] `transcribe` would decode from (audio tokens spliced in)."""
    wav = asr.load_audio(audio, sample_rate)
    feats = asr.features(wav)
    if feats.shape[0] == 0:
        raise ValueError("audio too short: no feature frame")
    aud = asr.adapt(asr.encode(feats))
    prompt = asr.prompt(aud.shape[1], language, hotwords, itn, prev_text)
    emb = asr.embed_prompt(prompt, aud)
    mx.eval(emb)
    return emb


def teacher_forced_logits(asr, embeds: mx.array, tokens) -> mx.array:
    """Float32 logits [n, V] predicting tokens[0..n-1] given the prompt `embeds` and the tokens
    before each position (one causal pass over prompt + tokens[:-1])."""
    tokens = [int(t) for t in tokens]
    if not tokens:
        raise ValueError("need at least one token")
    s = embeds.shape[1]
    x = embeds
    if len(tokens) > 1:
        tok_emb = asr.net.llm.embed(mx.array(tokens[:-1])[None])
        x = mx.concatenate([embeds, tok_emb.astype(embeds.dtype)], axis=1)
    logits = asr.prefill(x, asr.new_cache(), all_logits=True)[0, s - 1:]
    logits = logits.astype(mx.float32)
    mx.eval(logits)
    return logits


def distribution_stats(ref_logits: mx.array, cand_logits: mx.array) -> dict:
    """Compare two [n, V] logit arrays row by row: ``top1_agreement``, ``mean_kl`` / ``max_kl``
    (KL(ref || cand), nats) and ``ref_top1_rank_mean`` / ``_max`` (the rank of the reference's
    top-1 token in the candidate's distribution, 0 = agreement: informative where distributions
    are flat and top-1 flips on tiny logit changes, as with random synthetic weights)."""
    ref_lp = ref_logits.astype(mx.float32) - mx.logsumexp(ref_logits.astype(mx.float32), axis=-1, keepdims=True)
    cand_lp = cand_logits.astype(mx.float32) - mx.logsumexp(cand_logits.astype(mx.float32), axis=-1, keepdims=True)
    kl = mx.sum(mx.exp(ref_lp) * (ref_lp - cand_lp), axis=-1)
    ref_top = mx.argmax(ref_logits, axis=-1)
    agree = ref_top == mx.argmax(cand_logits, axis=-1)
    # how many tokens the candidate scores above the reference's choice (0 = same top-1)
    at_ref = mx.take_along_axis(cand_logits, ref_top[:, None], axis=-1)
    rank = mx.sum(cand_logits > at_ref, axis=-1)
    mx.eval(kl, agree, rank)
    ranks = rank.tolist()
    kl_list = [max(0.0, float(v)) for v in kl.tolist()]  # rounding can give -1e-9
    n = len(kl_list)
    return {
        "top1_agreement": float(agree.astype(mx.float32).mean().item()),
        "mean_kl": math.fsum(kl_list) / n,
        "max_kl": max(kl_list),
        "n_tokens": n,
        "ref_top1_rank_mean": sum(ranks) / n,
        "ref_top1_rank_max": max(ranks),
    }


class TeacherForcedReference:
    """The reference side of `teacher_forced_fidelity`, computed once and reusable for several
    candidates on the same clip and prompt: the greedy tokens and the reference's float32 logits."""

    def __init__(self, ref_asr, audio, n_tokens: int = 32, sample_rate=None, **prompt_kwargs):
        if n_tokens < 1:
            raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
        self.audio, self.sample_rate, self.prompt_kwargs = audio, sample_rate, prompt_kwargs
        self.preset = getattr(ref_asr, "preset", None)
        emb = prompt_embeddings(ref_asr, audio, sample_rate, **prompt_kwargs)
        tokens, _ = ref_asr.generate(emb, max_new_tokens=n_tokens, ignore_eos=True)
        self.tokens = [int(t) for t in tokens]
        self.logits = teacher_forced_logits(ref_asr, emb, self.tokens)
        greedy = mx.argmax(self.logits, axis=-1).tolist()
        self.greedy_agreement = sum(int(a == b) for a, b in zip(greedy, self.tokens)) / len(self.tokens)


def teacher_forced_fidelity(ref_asr, cand_asr, audio=None, n_tokens: int = 32, sample_rate=None,
                            reference: TeacherForcedReference | None = None, **prompt_kwargs) -> dict:
    """Compare `cand_asr` with `ref_asr` on one clip, teacher-forced on the reference's tokens.

    The reference greedily decodes exactly `n_tokens` tokens (EOS ignored, so the length is
    pinned whatever the weights say); both models then score prompt + those tokens in one pass.
    Returns ``top1_agreement`` (fraction of positions whose argmax agrees), ``mean_kl`` / ``max_kl``
    (KL(ref || cand) of the next-token distributions, nats), ``ref_top1_rank_mean`` / ``_max``,
    ``n_tokens``, ``ref_greedy_agreement`` (how often the reference's one-pass argmax equals its
    own step-by-step greedy token: 1.0 up to ties, a sanity check of the teacher forcing), and
    the tokens. `prompt_kwargs`: language, hotwords, itn, prev_text.

    To compare several candidates with one reference, build `TeacherForcedReference(ref_asr,
    audio, n_tokens, ...)` once and pass it as `reference` (then `ref_asr`/`audio` may be None).
    """
    if reference is None:
        reference = TeacherForcedReference(ref_asr, audio, n_tokens, sample_rate, **prompt_kwargs)
    cand_emb = prompt_embeddings(cand_asr, reference.audio, reference.sample_rate, **reference.prompt_kwargs)
    cand_logits = teacher_forced_logits(cand_asr, cand_emb, reference.tokens)
    out = distribution_stats(reference.logits, cand_logits)
    out["ref_greedy_agreement"] = reference.greedy_agreement
    out["tokens"] = list(reference.tokens)
    out["ref_preset"] = reference.preset
    out["cand_preset"] = cand_asr.preset
    return out


def compare_transcripts(ref_asr, cand_asr, audio, max_new_tokens: int = 128, ignore_eos: bool = False,
                        **transcribe_kwargs) -> dict:
    """Transcribe `audio` with both models (greedy, free-running) and compare (needs jiwer: the
    ``bench`` or ``eval`` extra).

    Returns ``cer`` (candidate vs reference text), ``cer_tn`` (same on the normalized texts),
    ``exact`` (identical token lists), ``token_agreement`` (fraction of positions, over the
    longer list, where the tokens are equal), ``first_divergence`` (index of the first differing
    token or None), both texts and both token lists.
    """
    from ..evaluation.metrics import cer

    r = ref_asr.transcribe(audio, max_new_tokens=max_new_tokens, ignore_eos=ignore_eos, **transcribe_kwargs)
    c = cand_asr.transcribe(audio, max_new_tokens=max_new_tokens, ignore_eos=ignore_eos, **transcribe_kwargs)
    n = max(len(r.tokens), len(c.tokens))
    same = [a == b for a, b in zip(r.tokens, c.tokens)]
    first = next((i for i, s in enumerate(same) if not s), None)
    if first is None and len(r.tokens) != len(c.tokens):
        first = min(len(r.tokens), len(c.tokens))
    return {
        "cer": cer(r.text, c.text),
        "cer_tn": cer(r.text_tn, c.text_tn),
        "exact": r.tokens == c.tokens,
        "token_agreement": (sum(same) / n) if n else 1.0,
        "first_divergence": first,
        "ref_text": r.text,
        "hyp_text": c.text,
        "ref_tokens": list(r.tokens),
        "hyp_tokens": list(c.tokens),
        "ref_preset": getattr(ref_asr, "preset", None),
        "cand_preset": getattr(cand_asr, "preset", None),
    }


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------


def _eval_result(out):
    arrays = [v for _, v in tree_flatten(out) if isinstance(v, mx.array)] if isinstance(
        out, (list, tuple, dict, mx.array)) else []
    if arrays:
        mx.eval(arrays)


def peak_memory_of(fn, *args, **kwargs):
    """Run `fn(*args, **kwargs)` (evaluating any MLX arrays it returns) and return
    ``(result, peak_bytes)``: MLX's peak allocated memory during the call, which includes the
    resident weights and whatever else was allocated before the call (reset first with
    mx.reset_peak_memory, after freeing MLX's buffer cache so cached blocks do not hide reuse)."""
    mx.synchronize()
    mx.clear_cache()
    mx.reset_peak_memory()
    out = fn(*args, **kwargs)
    _eval_result(out)
    mx.synchronize()
    return out, int(mx.get_peak_memory())


def transcription_memory(asr, audio, **transcribe_kwargs) -> dict:
    """Memory of one `asr.transcribe(audio, **kw)`: weight bytes (per component + total), MLX
    active bytes before the call, and the call's peak bytes (weights included)."""
    from ..precision.quantize import weight_bytes

    mx.synchronize()
    mx.clear_cache()
    active = int(mx.get_active_memory())
    res, peak = peak_memory_of(asr.transcribe, audio, **transcribe_kwargs)
    return {"weight_bytes": weight_bytes(asr.net), "active_before": active, "peak_bytes": peak,
            "transient_peak_bytes": peak - active, "preset": asr.preset,
            "result": res}


__all__ = ["teacher_forced_fidelity", "TeacherForcedReference", "teacher_forced_logits", "distribution_stats", "prompt_embeddings",
           "compare_transcripts", "peak_memory_of", "transcription_memory"]
