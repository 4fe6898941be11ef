"""Loading a checkpoint and running it: stage by stage (for benchmarks) or end to end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..model import frontend as fe
from ..io.audio import AudioError, load_audio
from ..checkpoint import CheckpointError
from ..model.config import ConfigError, ModelConfig
from ..model.fun_asr_nano import FunASRNano
from ..model.prompt import Prompt, build_prompt, postprocess, stable_text
from .decode import greedy_decode, iter_decode, left_pad
from .numerics import check_finite
from .cache import KVCache, make_cache
from .backend import BackendPolicy, resolve_policy

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
    stop_reason: str  # "eos", "max_new_tokens" or "repetition"
    timings: dict = field(default_factory=dict)  # seconds per stage, measured after mx.eval
    decode_steps: int = 0  # decoder calls after the prefill (the batch's, when batched)
    batch_size: int = 1
    batch_audio_seconds: float = 0.0  # audio in the whole batch this row was decoded with

    @property
    def rtf(self) -> float:
        """Wall time over audio time for the pass that produced this row (batch-level)."""
        total = sum(self.timings.get(k, 0.0) for k in STAGES)
        audio = self.batch_audio_seconds or self.audio_seconds
        return total / audio if audio else float("nan")

    @property
    def ms_per_token(self) -> float:
        return 1000.0 * self.timings.get("decode", 0.0) / self.decode_steps if self.decode_steps else float("nan")


STAGES = ("frontend", "encoder", "adaptor", "prompt", "prefill", "decode", "postprocess")


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
                 synthetic: bool = False, dtype=mx.float32, audio_dtype=mx.float32, plan=None,
                 checkpoint_dir=None, policy=None, checkpoint_form: str = "official", ignored_entries=()):
        from ..precision.plan import PrecisionPlan

        self.net = net
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.source = source
        self.synthetic = synthetic
        self.dtype = dtype
        self.audio_dtype = audio_dtype
        self.plan = plan or PrecisionPlan.from_dtypes(dtype, audio_dtype)
        self.preset = self.plan.name
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_form = checkpoint_form  # funasr_nano.checkpoint.forms: which form was read
        self.ignored_entries = list(ignored_entries)  # non-tensor checkpoint entries skipped at load
        eos = set(cfg.llm.eos_token_ids) | set(STOP_IDS)
        self.stop_ids = tuple(sorted(eos))
        self._decode_step_fn = None
        self._policy = None
        self.policy = resolve_policy(policy)

    @property
    def policy(self) -> BackendPolicy:
        """The backend policy this model runs with (`funasr_nano.runtime.backend`). Assigning a
        new one (a `BackendPolicy` or an override string) reconfigures the quantized layers."""
        return self._policy

    @policy.setter
    def policy(self, value):
        from ..precision.quantize import configure_quantized

        self._policy = resolve_policy(value)  # a BackendPolicy passes through unchanged
        configure_quantized(self.net, self._policy)
        for layer in self.net.audio_encoder.layers():
            layer.self_attn.fsmn_conv = self._policy.fsmn_conv
        self._decode_step_fn = None

    # ----- stages -------------------------------------------------------------------------
    def load_audio(self, audio, sample_rate=None) -> np.ndarray:
        return load_audio(audio, sample_rate, self.cfg.frontend.fs)

    def features(self, audio: np.ndarray) -> np.ndarray:
        """Waveform (16 kHz mono float) -> LFR features [T_lfr, 560] (numpy float32)."""
        return fe.features(audio, self.cfg.frontend)

    def encode(self, feats, lengths=None) -> mx.array:
        """Features [T, 560] or padded [B, T, 560] (+ lengths) -> encoder output [B, T, 512]."""
        x = mx.array(feats)
        if x.ndim == 2:
            x = x[None]
        out = self.net.encode_audio(x.astype(self.audio_dtype), None if lengths is None else mx.array(lengths),
                                    self.policy.encoder_eval_every)
        return check_finite(out, "encoder", self.preset)  # fp16 overflow -> NumericalOverflowError

    def adapt(self, enc: mx.array, lengths=None, truncate: bool = True) -> mx.array:
        """Encoder output -> adaptor output [B, T', D]. With `truncate` (unbatched only) it is
        cut to the ceil(T/8) audio tokens the prompt uses."""
        out, _ = self.net.adapt(enc, None if lengths is None else mx.array(lengths))
        if truncate:
            out = out[:, : self.n_audio_tokens(enc.shape[1])]
        return check_finite(out, "adaptor", self.preset)

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

    def batch_features(self, wavs):
        """Padded LFR features [B, T, 560] and frame counts of 16 kHz waveforms, with the policy's
        frontend: float64 numpy, or float32 MLX on the device (evaluated, so timings are honest)."""
        if self.policy.frontend == "mlx":
            feats, lengths = fe.batch_features_mx(wavs, self.cfg.frontend)
            mx.eval(feats)
            return feats, lengths
        return fe.batch_features(wavs, self.cfg.frontend)

    def decode_step_fn(self):
        """The compiled one-token step used by greedy decoding (built once per model and policy)."""
        if self._decode_step_fn is None:
            from .compiled_step import make_step

            self._decode_step_fn = make_step(self.net.llm, cpu_ops=self.policy.step_ops == "tables")
        return self._decode_step_fn

    def new_cache(self) -> list[KVCache]:
        return make_cache(self.cfg.llm)

    def prefill(self, embeds: mx.array, cache, all_logits: bool = False) -> mx.array:
        """Run the prompt through the decoder; returns logits of the last row [B, V] (or all)."""
        pos = 0 if cache is None else cache[0].offset
        h = self.net.llm.hidden(embeds.astype(self.dtype), cache, positions=pos,
                                mask="causal" if embeds.shape[1] > 1 else None)
        logits = self.net.llm.logits(h if all_logits else h[:, -1])
        check_finite(logits if logits.ndim == 2 else logits[:, -1], "logits", self.preset)  # last row: pad rows may be masked
        return logits

    def decode_step(self, token, cache) -> mx.array:
        """Feed one token per row ([B] ids) at the cache's position; returns logits [B, V]."""
        ids = mx.array(token).reshape(-1, 1)
        pos = cache[0].offset
        h = self.net.llm.hidden(self.net.llm.embed(ids), cache, positions=pos, mask=None)
        return self.net.llm.logits(h[:, -1])

    # ----- decoding -----------------------------------------------------------------------
    def generate(self, embeds: mx.array, max_new_tokens: int = 512, ignore_eos: bool = False,
                 timings: dict | None = None, repetition_guard=None) -> tuple[list[int], str]:
        """Greedy decoding from prompt embeddings [1, S, D]. Returns (tokens, stop_reason).

        With `ignore_eos` exactly `max_new_tokens` tokens are produced (for benchmarks).
        """
        res = greedy_decode(self, embeds, None, None, max_new_tokens, self.stop_ids, ignore_eos,
                            repetition_guard)
        if timings is not None:
            timings["prefill"] = timings.get("prefill", 0.0) + res.prefill_s
            timings["decode"] = timings.get("decode", 0.0) + res.decode_s
            timings["decode_steps"] = res.steps
        return res.tokens[0], res.stop_reasons[0]

    def _prepare(self, audios, language, hotwords, itn, prev_text, sample_rate, timings):
        """Audio -> per-row (wav, prompt, embeddings [S_i, D]), batched through encoder/adaptor."""
        t0 = time.perf_counter()
        wavs = [self.load_audio(a, sample_rate) for a in audios]
        feats, lengths = self.batch_features(wavs)
        for i, n in enumerate(lengths):
            if n == 0:
                where = audios[i] if isinstance(audios[i], (str, Path)) else f"clip {i}"
                raise AudioError(f"{where}: audio too short ({wavs[i].shape[0]} samples): "
                                 f"the fbank needs at least one frame")
        timings["frontend"] = time.perf_counter() - t0
        if len(wavs) == 1:
            enc = _eval_time(self.encode, feats[:1, : int(lengths[0])], timings=timings, key="encoder")
            auds = [_eval_time(self.adapt, enc, timings=timings, key="adaptor")[0]]
        else:
            enc = _eval_time(self.encode, feats, lengths, timings=timings, key="encoder")
            full = _eval_time(lambda e: self.adapt(e, lengths, truncate=False), enc,
                              timings=timings, key="adaptor")
            auds = [full[i, : self.n_audio_tokens(int(n))] for i, n in enumerate(lengths)]
        t0 = time.perf_counter()
        prompts = [self.prompt(a.shape[0], language, hotwords, itn, prev_text) for a in auds]
        rows = [self.embed_prompt(p, a)[0] for p, a in zip(prompts, auds)]
        mx.eval(rows)
        timings["prompt"] = time.perf_counter() - t0
        return wavs, prompts, rows

    def _results(self, wavs, prompts, res, prev_text, timings) -> list[Transcription]:
        t0 = time.perf_counter()
        texts = [postprocess(self.tokenizer.decode(t, skip_special_tokens=True), prev_text) for t in res.tokens]
        timings["postprocess"] = time.perf_counter() - t0
        timings["prefill"], timings["decode"] = res.prefill_s, res.decode_s
        fs = self.cfg.frontend.fs
        total = sum(w.shape[0] for w in wavs) / fs
        return [Transcription(text, tn, toks, p.n_audio, len(p), w.shape[0] / fs, reason, dict(timings),
                              res.steps, len(wavs), total)
                for (text, tn), toks, p, w, reason in zip(texts, res.tokens, prompts, wavs, res.stop_reasons)]

    def transcribe_batch(self, audios, language=None, hotwords=None, itn: bool = True,
                         max_new_tokens: int = 512, ignore_eos: bool = False, prev_text: str = "",
                         sample_rate=None, repetition_guard=None) -> list[Transcription]:
        """Transcribe several clips in one padded, masked pass (per-row stopping).

        In float32 each row's tokens equal what `transcribe` gives for that clip alone.
        """
        if len(audios) == 0:
            return []
        timings: dict = {}
        wavs, prompts, rows = self._prepare(audios, language, hotwords, itn, prev_text, sample_rate, timings)
        embeds, valid, offsets = left_pad(rows)
        res = greedy_decode(self, embeds, valid, offsets, max_new_tokens, self.stop_ids, ignore_eos,
                            repetition_guard)
        return self._results(wavs, prompts, res, prev_text, timings)

    def transcribe(self, audio, language=None, hotwords=None, itn: bool = True, max_new_tokens: int = 512,
                   ignore_eos: bool = False, prev_text: str = "", sample_rate=None,
                   repetition_guard=None) -> Transcription:
        """Transcribe one clip (path or samples). Timings are per stage, in seconds."""
        return self.transcribe_batch([audio], language, hotwords, itn, max_new_tokens, ignore_eos,
                                     prev_text, sample_rate, repetition_guard)[0]

    def stream(self, audio, language=None, hotwords=None, itn: bool = True, max_new_tokens: int = 512,
               prev_text: str = "", sample_rate=None, repetition_guard=None):
        """Yield the transcript's text piece by piece as tokens decode; returns the Transcription.

        The pieces join to the Transcription's `text` (the reference's post-processing: "/sil"
        markers to spaces, whitespace runs collapsed): a piece is held back while it ends inside a
        multi-byte character, a possible "/sil" or whitespace that the next tokens may change.
        """
        timings: dict = {}
        wavs, prompts, rows = self._prepare([audio], language, hotwords, itn, prev_text, sample_rate, timings)
        embeds, valid, offsets = left_pad(rows)
        gen = iter_decode(self, embeds, valid, offsets, max_new_tokens, self.stop_ids, False, repetition_guard)
        toks = []
        sent = stable_text(prev_text or "")
        if sent:
            yield sent
        while True:
            try:
                _, t = next(gen)
            except StopIteration as done:
                res = done.value
                break
            toks.append(t)
            raw = self.tokenizer.decode(toks, skip_special_tokens=True)
            if raw.endswith("\ufffd"):
                continue
            text = stable_text((prev_text or "") + raw)
            if len(text) > len(sent) and text.startswith(sent):
                yield text[len(sent):]
                sent = text
        out = self._results(wavs, prompts, res, prev_text, timings)[0]
        if len(out.text) > len(sent) and out.text.startswith(sent):
            yield out.text[len(sent):]
        return out


def _cast(weights: dict, dtype, prefixes) -> dict:
    out = {}
    for k, v in weights.items():
        if k.startswith(prefixes) and mx.issubdtype(v.dtype, mx.floating):
            v = v.astype(dtype)
        out[k] = v
    return out


def load(path_or_repo, dtype="float32", audio_dtype="float32", cache_dir=None, preset=None,
         policy=None) -> FunASRNanoASR:
    """Load a Fun-ASR-Nano checkpoint directory or Hugging Face repo id, in any published form:
    official (`model.pt`), Transformers `-hf`, mlx-audio / mlx-community (float or quantized), or
    one written by `precision.save_quantized` (see `funasr_nano.checkpoint.forms`).

    `dtype` is the decoder's compute precision, `audio_dtype` the encoder's and adaptor's.
    The first load of a `model.pt` converts it to safetensors in a cache; later loads mmap it.

    `preset` (see `funasr_nano.precision`: "fp32", "bf16", "fp16", "q8", "q4", "q4-g32",
    "q4-llm+bf16-audio", ...) overrides `dtype`/`audio_dtype` and casts/quantizes per component.
    A directory written by `precision.save_quantized` loads its stored (quantized) tensors
    directly; `preset` may then only repeat the stored one.

    `policy` overrides the backend policy (`funasr_nano.runtime.backend.resolve_policy`: a
    `BackendPolicy`, or a string such as ``"dequant_min_rows=never"`` or ``"metal"``); by default it
    is resolved from the backend MLX runs on and the ``FUNASR_NANO_POLICY`` variable. It also gives
    the compute dtype of quantized presets that name none (``q4`` computes in float32 on the CPU,
    bfloat16 on GPUs), and of a bf16 audio group (``bf16``: float32 encoder and adaptor with bf16
    weights on the CPU, bfloat16 on GPUs).
    """
    from ..checkpoint.resolve import resolve_checkpoint
    from ..checkpoint.forms import PRECISION, open_checkpoint
    from ..precision.plan import PrecisionPlan, parse_preset
    from ..precision.quantize import apply_precision, check_modes_supported
    from ..precision.io import load_precision_net
    from ..synthetic import is_synthetic
    from ..model.tokenizer import Tokenizer

    policy = resolve_policy(policy)
    if policy.reference_blas_check:
        from .platform_info import warn_if_reference_blas

        warn_if_reference_blas()  # Linux: MLX's bundled reference BLAS is many times slower
    ckpt = Path(resolve_checkpoint(path_or_repo, cache_dir=cache_dir))
    form = open_checkpoint(ckpt)  # official / precision / transformers (-hf) / mlx-audio
    cfg = form.cfg
    if form.form == PRECISION:
        net, plan = load_precision_net(ckpt, cfg, preset, quant_compute=policy.quant_compute,
                                       bf16_audio_compute=policy.bf16_audio_compute,
                                       bf16_llm_compute=policy.bf16_llm_compute)
        check_modes_supported(plan)
    else:
        net = FunASRNano(cfg)
        weights, qmap = _form_weights(form, net, cache_dir)
        if qmap:  # stored quantized (mlx-audio -4bit/-8bit): keep its tensors, cast the rest
            net, plan = _load_stored_quantized(net, weights, qmap, preset, dtype, audio_dtype, ckpt)
        else:
            plan = parse_preset(preset, policy.quant_compute, policy.bf16_audio_compute,
                                policy.bf16_llm_compute) if preset is not None \
                else PrecisionPlan.from_dtypes(parse_dtype(dtype), parse_dtype(audio_dtype))
            check_modes_supported(plan)  # before any work: a mode this backend lacks is an error, not a swap
            weights = net.sanitize(weights)
            if preset is None:
                weights = _cast(weights, plan.audio_dtype, ("audio_encoder.", "audio_adaptor."))
                weights = _cast(weights, plan.llm_dtype, ("llm.",))
            else:  # float32 (lazily) first: quantize from full precision, then cast per the plan
                weights = _cast(weights, mx.float32, ("audio_encoder.", "audio_adaptor.", "llm."))
            net.load_weights(list(weights.items()), strict=True)
            if preset is not None:
                apply_precision(net, plan)
        del weights  # the lazily loaded sources are then freed as soon as their module is evaluated
    net.eval()
    mx.eval(net.parameters())
    try:
        tok = Tokenizer.from_dir(form.tokenizer_dir)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from e
    return FunASRNanoASR(net, tok, cfg, source=str(path_or_repo), synthetic=is_synthetic(ckpt),
                         dtype=plan.llm_dtype, audio_dtype=plan.audio_dtype, plan=plan, checkpoint_dir=ckpt,
                         policy=policy, checkpoint_form=form.form, ignored_entries=form.ignored)


def _form_weights(form, net: FunASRNano, cache_dir):
    """A form's weights in this port's layout, checked against `net` (quantized: after
    quantizing `net`'s skeleton the way the file says)."""
    from ..checkpoint.mlx_audio import FORM as MLX_AUDIO

    if form.form != MLX_AUDIO:
        return form.load_weights(net.expected_shapes(), net.optional_keys(), cache_dir), {}
    from ..checkpoint.mlx_audio import load_weights
    from ..precision.quantize import quantize_modules

    qmap = form.quantization(load_weights(form.directory))  # lazy: only the key names are read
    if qmap:
        try:
            quantize_modules(net, qmap)
        except ValueError as e:
            raise CheckpointError(f"{form.directory}: {form.label}: {e}") from e
    return form.load_weights(net.expected_shapes(), net.optional_keys(), cache_dir), qmap


def _load_stored_quantized(net, weights, qmap, preset, dtype, audio_dtype, ckpt):
    """Load quantized tensors as stored; other float parameters and the quantization scales take
    the compute dtypes (`dtype` for the decoder, `audio_dtype` for encoder and adaptor)."""
    from ..precision.plan import ComponentPrecision, PrecisionPlan, parse_preset
    from ..precision.quantize import _cast_params, component_of

    specs = {(q["bits"], q["group_size"], q.get("mode", "affine")) for q in qmap.values()}
    comps = {component_of(p) for p in qmap}
    kind = {4: "q4", 8: "q8"}.get(next(iter(specs))[0]) if len(specs) == 1 else None
    if kind is None or next(iter(specs))[2] != "affine" or not comps <= {"llm_layers", "embedding"}:
        raise CheckpointError(f"{ckpt}: quantization {sorted(specs)} of {sorted(comps)} is not supported "
                              "(uniform affine 4- or 8-bit of the decoder, as mlx-audio's converter writes)")
    floats = PrecisionPlan.from_dtypes(parse_dtype(dtype), parse_dtype(audio_dtype))
    a_kind, l_kind = floats.audio_compute, floats.llm_compute
    q = ComponentPrecision(kind, next(iter(specs))[1])
    plan = PrecisionPlan(ComponentPrecision(a_kind), ComponentPrecision(a_kind),
                         q if "llm_layers" in comps else ComponentPrecision(l_kind),
                         q if "embedding" in comps else ComponentPrecision(l_kind),
                         audio_compute=a_kind, llm_compute=l_kind)
    if preset is not None and parse_preset(preset) != plan:
        raise ValueError(f"{ckpt} is stored quantized as {plan.name!r}; it cannot be loaded as "
                         f"{parse_preset(preset).name!r} (pass dtype/audio_dtype for the compute dtypes)")
    net.load_weights(list(net.sanitize(weights).items()), strict=True)
    # packed quantized weights are integers (left alone); scales, biases, norms take the group's dtype
    _cast_params(net, lambda k: plan.audio_dtype if component_of(k) in ("encoder", "adaptor") else plan.llm_dtype)
    return net, plan
