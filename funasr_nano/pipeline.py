"""Loading a checkpoint and running it: stage by stage (for benchmarks) or end to end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map

from . import frontend as fe
from .audio import load_audio
from .config import ModelConfig, llm_dir
from .model import FunASRNano
from .prompt import Prompt, build_prompt, postprocess
from .qwen3 import KVCache, make_cache

DTYPES = {"float32": mx.float32, "fp32": mx.float32, "bfloat16": mx.bfloat16, "bf16": mx.bfloat16,
          "float16": mx.float16, "fp16": mx.float16}
STOP_IDS = (151645, 151643)  # <|im_end|>, <|endoftext|>


def parse_dtype(name) -> mx.Dtype:
    if isinstance(name, mx.Dtype):
        return name
    try:
        return DTYPES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(set(DTYPES))}") from None


@dataclass
class Transcription:
    text: str
    text_tn: str
    tokens: list
    n_audio_tokens: int
    prompt_tokens: int
    audio_seconds: float
    stop_reason: str  # "eos" or "max_new_tokens"
    timings: dict = field(default_factory=dict)  # seconds per stage, measured after mx.eval

    @property
    def rtf(self) -> float:
        total = sum(self.timings.values())
        return total / self.audio_seconds if self.audio_seconds else float("nan")


def _eval_time(fn, *args, timings=None, key=None):
    t0 = time.perf_counter()
    out = fn(*args)
    mx.eval(out)
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
    return out


class FunASRNanoASR:
    """A loaded model with its tokenizer. Build with `load()`."""

    def __init__(self, net: FunASRNano, tokenizer, cfg: ModelConfig, source: str = "",
                 synthetic: bool = False, dtype=mx.float32, audio_dtype=mx.float32):
        self.net = net
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.source = source
        self.synthetic = synthetic
        self.dtype = dtype
        self.audio_dtype = audio_dtype
        eos = set(cfg.llm.eos_token_ids) | set(STOP_IDS)
        self.stop_ids = tuple(sorted(eos))

    # ----- stages -------------------------------------------------------------------------
    def load_audio(self, audio, sample_rate=None) -> np.ndarray:
        return load_audio(audio, sample_rate, self.cfg.frontend.fs)

    def features(self, audio: np.ndarray) -> np.ndarray:
        """Waveform (16 kHz mono float) -> LFR features [T_lfr, 560] (numpy float32)."""
        return fe.features(audio, self.cfg.frontend)

    def encode(self, feats, lengths=None) -> mx.array:
        """Features [T, 560] or [B, T, 560] -> encoder output [B, T, 512]."""
        x = mx.array(feats)
        if x.ndim == 2:
            x = x[None]
        return self.net.encode_audio(x.astype(self.audio_dtype),
                                     None if lengths is None else mx.array(lengths))

    def adapt(self, enc: mx.array, lengths=None, truncate: bool = True) -> mx.array:
        """Encoder output -> adaptor output [B, T', D]; by default cut to the ceil(T/8) audio
        tokens the prompt uses (only valid unbatched: batched callers slice per row)."""
        out, _ = self.net.adapt(enc, None if lengths is None else mx.array(lengths))
        if truncate:
            out = out[:, : self.n_audio_tokens(enc.shape[1])]
        return out

    def n_audio_tokens(self, t_lfr: int) -> int:
        return fe.num_audio_tokens(t_lfr, self.cfg.adaptor.use_low_frame_rate)

    def prompt(self, n_audio: int, language=None, hotwords=None, itn=True, prev_text="") -> Prompt:
        return build_prompt(self.tokenizer, n_audio, language, hotwords, itn, prev_text)

    def embed_prompt(self, prompt: Prompt, audio_emb: mx.array) -> mx.array:
        """Prompt embeddings [1, S, D] with rows audio_start.. replaced by the audio tokens."""
        if audio_emb.ndim == 3:
            audio_emb = audio_emb[0]
        if audio_emb.shape[0] != prompt.n_audio:
            raise ValueError(f"prompt expects {prompt.n_audio} audio tokens, got {audio_emb.shape[0]}")
        pre = self.net.llm.embed(mx.array(prompt.prefix)[None])
        suf = self.net.llm.embed(mx.array(prompt.suffix)[None])
        return mx.concatenate([pre, audio_emb[None].astype(pre.dtype), suf], axis=1)

    def new_cache(self) -> list[KVCache]:
        return make_cache(self.cfg.llm)

    def prefill(self, embeds: mx.array, cache, all_logits: bool = False) -> mx.array:
        """Run the prompt through the decoder; returns logits of the last row [B, V] (or all)."""
        h = self.net.llm.hidden(embeds.astype(self.dtype), cache, positions=0,
                                mask="causal" if embeds.shape[1] > 1 else None)
        return self.net.llm.logits(h if all_logits else h[:, -1])

    def decode_step(self, token, cache) -> mx.array:
        """Feed one token per row ([B] ids) at the cache's position; returns logits [B, V]."""
        ids = mx.array(token).reshape(-1, 1)
        pos = cache[0].offset
        h = self.net.llm.hidden(self.net.llm.embed(ids), cache, positions=pos, mask=None)
        return self.net.llm.logits(h[:, -1])

    # ----- decoding -----------------------------------------------------------------------
    def generate(self, embeds: mx.array, max_new_tokens: int = 512, ignore_eos: bool = False,
                 timings: dict | None = None) -> tuple[list[int], str]:
        """Greedy decoding from prompt embeddings [1, S, D]. Returns (tokens, stop_reason).

        With `ignore_eos` exactly `max_new_tokens` tokens are produced (for benchmarks).
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        timings = {} if timings is None else timings
        cache = self.new_cache()
        t0 = time.perf_counter()
        logits = self.prefill(embeds, cache)
        token = mx.argmax(logits, axis=-1)
        mx.eval(token)
        timings["prefill"] = timings.get("prefill", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        tokens, reason = [], "max_new_tokens"
        stop = set(self.stop_ids)
        # Queue step n+1 before reading step n's token so the host never waits idle.
        while True:
            nxt = None
            if len(tokens) + 1 < max_new_tokens:
                nxt = mx.argmax(self.decode_step(token, cache), axis=-1)
                mx.async_eval(nxt)
            t = int(token.item())
            if not ignore_eos and t in stop:
                reason = "eos"
                break
            tokens.append(t)
            if nxt is None:
                break
            token = nxt
        mx.eval(cache[0].keys)
        timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t0
        timings["decode_tokens"] = len(tokens)
        return tokens, reason

    def transcribe(self, audio, language=None, hotwords=None, itn: bool = True, max_new_tokens: int = 512,
                   ignore_eos: bool = False, prev_text: str = "", sample_rate=None) -> Transcription:
        """Transcribe one clip (path or samples). Timings are per stage, in seconds."""
        timings: dict = {}
        t0 = time.perf_counter()
        wav = self.load_audio(audio, sample_rate)
        feats = self.features(wav)
        timings["frontend"] = time.perf_counter() - t0
        if feats.shape[0] == 0:
            raise ValueError(f"audio too short: {wav.shape[0]} samples give no feature frame "
                             f"(need at least {int(self.cfg.frontend.fs * 0.025)} samples?)")
        enc = _eval_time(self.encode, feats, timings=timings, key="encoder")
        aud = _eval_time(self.adapt, enc, timings=timings, key="adaptor")
        prompt = self.prompt(aud.shape[1], language, hotwords, itn, prev_text)
        embeds = _eval_time(self.embed_prompt, prompt, aud, timings=timings, key="prompt")
        tokens, reason = self.generate(embeds, max_new_tokens, ignore_eos, timings)
        timings.pop("decode_tokens")
        t0 = time.perf_counter()
        text, text_tn = postprocess(self.tokenizer.decode(tokens, skip_special_tokens=True), prev_text)
        timings["postprocess"] = time.perf_counter() - t0
        return Transcription(text, text_tn, tokens, prompt.n_audio, len(prompt),
                            wav.shape[0] / self.cfg.frontend.fs, reason, timings)


def _cast(weights: dict, dtype, prefixes) -> dict:
    out = {}
    for k, v in weights.items():
        if k.startswith(prefixes) and mx.issubdtype(v.dtype, mx.floating):
            v = v.astype(dtype)
        out[k] = v
    return out


def load(path_or_repo, dtype="float32", audio_dtype="float32", cache_dir=None) -> FunASRNanoASR:
    """Load a Fun-ASR-Nano checkpoint directory (official layout) or a Hugging Face repo id.

    `dtype` is the decoder's compute precision, `audio_dtype` the encoder's and adaptor's.
    The first load of a `model.pt` converts it to safetensors in a cache; later loads mmap it.
    """
    from .checkpoint import check_state_dict, load_checkpoint_weights, resolve_checkpoint
    from .synthetic import is_synthetic
    from .tokenizer import Tokenizer

    ckpt = Path(resolve_checkpoint(path_or_repo, cache_dir=cache_dir))
    cfg = ModelConfig.from_dir(ckpt)
    dtype, audio_dtype = parse_dtype(dtype), parse_dtype(audio_dtype)
    net = FunASRNano(cfg)
    weights = load_checkpoint_weights(ckpt, cache_dir=cache_dir)
    check_state_dict(weights, net.expected_shapes(), optional_prefixes=net.optional_keys())
    weights = net.sanitize(weights)
    weights = _cast(weights, audio_dtype, ("audio_encoder.", "audio_adaptor."))
    weights = _cast(weights, dtype, ("llm.",))
    net.load_weights(list(weights.items()), strict=True)
    net.eval()
    mx.eval(net.parameters())
    tok = Tokenizer.from_dir(llm_dir(ckpt, cfg.raw["config.yaml"]))
    return FunASRNanoASR(net, tok, cfg, source=str(path_or_repo), synthetic=is_synthetic(ckpt),
                         dtype=dtype, audio_dtype=audio_dtype)
