"""Reference harness: the official PyTorch FunASR code as the ground truth for parity tests.

Everything numeric here comes from the installed ``funasr`` package (``FunASRNano`` from
``funasr/models/fun_asr_nano/model.py``, its ``WavFrontend``/``apply_lfr``, its
``load_pretrained_model``) and from the Hugging Face ``Qwen3ForCausalLM`` it builds. The
harness only *records* intermediate tensors on the way through the reference's own code
paths; it never re-implements a stage.

Main entry points
-----------------
* :func:`build_reference_checkpoint` - write a checkpoint directory in the official layout
  (``config.yaml``, ``Qwen3-0.6B/{config.json,tokenizer files}``, bf16 ``model.pt``) with
  seeded random weights.
* :func:`load_reference_model` - build ``FunASRNano`` from such a directory and load
  ``model.pt`` with funasr's loader (bf16 values -> fp32 params), eval mode, dither 0.
* :func:`run_reference` - run one clip and record fbank / LFR / encoder / adaptor / prompt ids /
  spliced embeddings / step-by-step greedy logits, plus the reference's own
  ``inference`` result (text, text_tn, generated ids).
* :func:`reference_npz` - cached version of the above keyed by preset, seed, clip, prompt
  options and library versions (``$FUNASR_NANO_REF_CACHE`` or
  ``~/.cache/funasr_nano/reference``).

CLI: ``python tests/reference_harness.py --preset tiny --out DIR [--clips a,b] [--n-steps 32]``
builds the checkpoint in DIR (unless present), runs the standard clips, saves
``DIR/reference/<clip>.npz`` (+ ``.json``) and prints timings.

Workarounds / deviations from an ``AutoModel`` run (see also the module-level notes in
:func:`_instantiate`):
* ``llm_conf.init_param_path`` / ``tokenizer_conf.init_param_path`` are relative
  (``Qwen3-0.6B``) in ``config.yaml``; they are resolved against the checkpoint directory
  (the official hub copy does this via ``configuration.json``/cwd).
* ``llm_conf.llm_dtype`` is overridden to ``fp32``. The official config says ``bf16``, but
  ``inference_llm`` casts the LLM to ``kwargs.get("llm_dtype", "fp32")`` = fp32 before
  generating (``llm_dtype`` is only nested under ``llm_conf``), and the loaded values are
  bf16-representable either way, so the computation is identical.
* ``WavFrontend(**frontend_conf, dither=0.0)``: the reference default dither is 1.0 (random).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import hashlib
import json
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

_REPO_ROOT = Path(__file__).resolve().parent.parent
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

HARNESS_VERSION = 1
QWEN_DIR_NAME = "Qwen3-0.6B"
PLACEHOLDER_ID = 0
EOS_IDS = (151645, 151643)  # <|im_end|>, <|endoftext|>

# ---------------------------------------------------------------------------------------
# lazy imports (torch/funasr/transformers are slow to import; funasr prints an ffmpeg notice)
# ---------------------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def _funasr_modules():
    """Import the funasr pieces the harness uses (registers model/frontend/tokenizer classes)."""
    import funasr  # noqa: F401  (prints the harmless ffmpeg notice)
    import funasr.frontends.wav_frontend as wav_frontend
    import funasr.models.fun_asr_nano.model as nano_model  # registers FunASRNano + deps
    import funasr.tokenizer.hf_tokenizer  # noqa: F401  registers HuggingfaceTokenizer
    import funasr.utils.fbank as fbank_mod
    from funasr.register import tables
    from funasr.train_utils.load_pretrained_model import load_pretrained_model
    from funasr.utils.misc import deep_update

    return {
        "wav_frontend": wav_frontend,
        "nano_model": nano_model,
        "fbank_mod": fbank_mod,
        "tables": tables,
        "load_pretrained_model": load_pretrained_model,
        "deep_update": deep_update,
    }


def library_versions() -> dict[str, str]:
    """Versions of everything that can change reference numbers."""
    import importlib.metadata as md

    out = {"harness": str(HARNESS_VERSION)}
    for dist in ("funasr", "torch", "transformers", "kaldi-native-fbank", "numpy", "tokenizers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "absent"
    return out


def fbank_backend() -> str:
    """Which backend ``funasr.utils.fbank.fbank`` dispatches to in this environment."""
    fb = _funasr_modules()["fbank_mod"]
    if getattr(fb, "_HAS_TORCHAUDIO", False):
        return "torchaudio"
    if getattr(fb, "_knf", None) is not None:
        return "kaldi-native-fbank"
    return "none"


# ---------------------------------------------------------------------------------------
# checkpoint construction
# ---------------------------------------------------------------------------------------


def _write_tokenizer_files(qwen_dir: Path, wait_s: float = 900.0) -> None:
    """Write the Qwen3 tokenizer files via ``funasr_nano.model.tokenizer`` (polls until it exists)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            from funasr_nano.model.tokenizer import write_qwen3_tokenizer_files

            break
        except ImportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(10)
    write_qwen3_tokenizer_files(qwen_dir)


def _resolve_conf(cfg: dict, ckpt_dir: Path, llm_dtype: str | None) -> dict:
    kwargs = copy.deepcopy(cfg)
    for section in ("llm_conf", "tokenizer_conf"):
        p = kwargs.get(section, {}).get("init_param_path")
        if p is not None and not os.path.isabs(p):
            kwargs[section]["init_param_path"] = str(ckpt_dir / p)
    if llm_dtype is not None:
        kwargs["llm_conf"]["llm_dtype"] = llm_dtype
    return kwargs


@contextlib.contextmanager
def _skip_random_init(enabled: bool = True):
    """Make ``Tensor.uniform_``/``normal_`` no-ops while the model is constructed.

    Construction-time random init (nn.Linear kaiming_uniform_, HF ``_init_weights`` normal_)
    costs ~15 s for the real preset on 2 cores and is pointless: every parameter is
    overwritten afterwards (seeded fill when building, strict full-coverage load when
    loading; both are checked). Parameters hold uninitialised memory until then.
    """
    torch = _torch()
    if not enabled:
        yield
        return
    names = ("uniform_", "normal_")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def _noop(self, *args, **kwargs):
        return self

    for n in names:
        setattr(torch.Tensor, n, _noop)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


def _instantiate(cfg: dict, ckpt_dir: Path, llm_dtype: str | None = "fp32", fast_init: bool = True):
    """Build (model, frontend, resolved kwargs) exactly like ``AutoModel.build_model`` does:
    frontend from the registry (here with dither 0), ``input_size = frontend.output_size()``,
    ``model_conf = deep_update(model_conf, kwargs)`` and ``model_class(**model_conf)``.
    ``fast_init`` skips the (overwritten anyway) random init, see :func:`_skip_random_init`.
    """
    m = _funasr_modules()
    tables, deep_update = m["tables"], m["deep_update"]
    kwargs = _resolve_conf(cfg, ckpt_dir, llm_dtype)
    frontend_conf = dict(kwargs.get("frontend_conf", {}))
    frontend_conf["dither"] = 0.0  # the reference default (1.0) adds random noise
    frontend = tables.frontend_classes.get(kwargs["frontend"])(**frontend_conf)
    kwargs["input_size"] = frontend.output_size()
    kwargs["device"] = "cpu"
    model_conf: dict = {}
    deep_update(model_conf, kwargs.get("model_conf", {}))
    deep_update(model_conf, kwargs)
    model_class = tables.model_classes.get(kwargs["model"])
    with _skip_random_init(fast_init):
        model = model_class(**model_conf)
    return model, frontend, kwargs


def _param_seed(seed: int, name: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**63 - 1)


def _fill_random_(model, seed: int) -> dict[str, str]:
    """Overwrite every parameter with seeded values rounded to bf16. Returns name->kind.

    matrices/embeddings N(0, 0.02); LayerNorm/RMSNorm weights 1 + N(0, 0.05); biases
    N(0, 0.02); FSMN depthwise conv N(0, 0.05). Each parameter has its own generator seeded
    from (seed, name), so values do not depend on iteration order.
    """
    torch = _torch()
    norm_params: set[str] = set()
    for mname, mod in model.named_modules():
        if "norm" in type(mod).__name__.lower():
            for pname, _ in mod.named_parameters(recurse=False):
                norm_params.add(f"{mname}.{pname}" if mname else pname)
    kinds = {}
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied params appear once
            g = torch.Generator().manual_seed(_param_seed(seed, name))
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            if name in norm_params and leaf == "weight":
                val, kind = 1.0 + 0.05 * noise, "norm_weight"
            elif name.endswith("fsmn_block.weight"):
                val, kind = 0.05 * noise, "fsmn"
            elif leaf == "bias":
                val, kind = 0.02 * noise, "bias"
            elif p.ndim >= 2:
                val, kind = 0.02 * noise, "matrix"
            else:
                raise RuntimeError(f"unclassified parameter {name} {tuple(p.shape)}")
            p.copy_(val.to(torch.bfloat16).to(p.dtype))
            kinds[name] = kind
        # Tied lm_head: equal to embed_tokens (HF ties them; copy if a config unties them).
        emb = model.llm.get_input_embeddings().weight
        head = model.llm.get_output_embeddings().weight
        if head.data_ptr() != emb.data_ptr():
            head.copy_(emb)
    return kinds


def build_reference_checkpoint(out_dir, preset: str = "tiny", seed: int = 0) -> Path:
    """Write an official-layout checkpoint directory with seeded random weights.

    Layout: ``config.yaml`` (preset dict), ``Qwen3-0.6B/config.json`` + tokenizer files,
    ``model.pt`` = ``{"state_dict": {key: bf16 tensor}}`` with exactly the keys of the official
    file (``audio_encoder.*``, ``audio_adaptor.*``, ``llm.*`` incl. ``llm.lm_head.weight``).
    """
    import yaml

    from funasr_nano.synthetic.sizes import get_preset

    torch = _torch()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg, qcfg = get_preset(preset)
    with open(out / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, allow_unicode=True, sort_keys=False)
    qdir = out / cfg["llm_conf"]["init_param_path"]
    qdir.mkdir(parents=True, exist_ok=True)
    with open(qdir / "config.json", "w", encoding="utf-8") as f:
        json.dump(qcfg, f, indent=2)
    _write_tokenizer_files(qdir)

    model, _frontend, _ = _instantiate(cfg, out, llm_dtype="fp32")
    kinds = _fill_random_(model, seed)
    sd = model.state_dict()
    state = {k: v.detach().to(torch.bfloat16).clone() for k, v in sd.items()}
    unexpected = [k for k in state if not k.startswith(("audio_encoder.", "audio_adaptor.", "llm."))]
    if unexpected:
        raise RuntimeError(f"unexpected state_dict keys (ctc?): {unexpected[:5]}")
    if "llm.lm_head.weight" not in state:
        raise RuntimeError("llm.lm_head.weight missing from the state_dict")
    missing_fill = set(state) - set(kinds) - {"llm.lm_head.weight"}
    if missing_fill:
        raise RuntimeError(f"state_dict entries not filled: {sorted(missing_fill)[:5]}")
    assert torch.equal(state["llm.lm_head.weight"], state["llm.model.embed_tokens.weight"])
    tmp = out / "model.pt.tmp"
    torch.save({"state_dict": state}, tmp)
    os.replace(tmp, out / "model.pt")
    meta = {
        "preset": preset,
        "seed": seed,
        "n_tensors": len(state),
        "n_params_stored": int(sum(v.numel() for v in state.values())),
        "prefix_counts": {p: sum(k.startswith(p + ".") for k in state) for p in ("audio_encoder", "audio_adaptor", "llm")},
        "versions": library_versions(),
    }
    with open(out / "reference_meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    del model, state, sd
    return out


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------


def _load_config_yaml(ckpt_dir: Path) -> dict:
    from omegaconf import OmegaConf  # funasr reads config.yaml with OmegaConf

    return OmegaConf.to_container(OmegaConf.load(ckpt_dir / "config.yaml"), resolve=True)


def load_reference_model(ckpt_dir, fast_init: bool = True):
    """Build ``FunASRNano`` from ``ckpt_dir/config.yaml`` and load ``model.pt`` via funasr.

    Returns ``(model, tokenizer, frontend)``; model in eval mode with fp32 params (bf16
    values), frontend = ``WavFrontend(**frontend_conf, dither=0.0)``. Strict about keys:
    the checkpoint must hold exactly the model's state_dict keys with matching shapes.
    """
    torch = _torch()
    m = _funasr_modules()
    ckpt_dir = Path(ckpt_dir)
    cfg = _load_config_yaml(ckpt_dir)
    model, frontend, kwargs = _instantiate(cfg, ckpt_dir, llm_dtype="fp32", fast_init=fast_init)
    tokenizer = m["tables"].tokenizer_classes.get(kwargs["tokenizer"])(**kwargs["tokenizer_conf"])

    path = ckpt_dir / "model.pt"
    src = torch.load(path, map_location="cpu", mmap=True, weights_only=True)["state_dict"]
    dst = model.state_dict()
    missing = sorted(set(dst) - set(src))
    extra = sorted(set(src) - set(dst))
    bad_shape = sorted(k for k in set(src) & set(dst) if tuple(src[k].shape) != tuple(dst[k].shape))
    if missing or extra or bad_shape:
        raise RuntimeError(f"checkpoint/model key mismatch: missing={missing[:5]} extra={extra[:5]} shape={bad_shape[:5]}")
    del src, dst
    # funasr's own loader (what AutoModel.build_model calls); copies bf16 into fp32 params.
    # Its torch.load is made mmap-backed (same tensors, ~2 GB less peak RSS for the real
    # preset: the loader also deep-copies the whole state dict).
    orig_load = torch.load

    def _mmap_load(f, *args, **kw):
        kw.setdefault("mmap", True)
        kw.setdefault("weights_only", True)
        return orig_load(f, *args, **kw)

    torch.load = _mmap_load
    try:
        m["load_pretrained_model"](model=model, path=str(path), ignore_init_mismatch=True)
    finally:
        torch.load = orig_load
    model.eval()
    for name, p in model.named_parameters():
        if p.dtype != torch.float32:
            raise RuntimeError(f"parameter {name} is {p.dtype}, expected float32")
        if not bool(torch.isfinite(p).all()):
            raise RuntimeError(f"parameter {name} has non-finite values after loading")
    model._reference_kwargs = kwargs  # config (dataset_conf etc.) the inference path reads
    model._reference_ckpt_dir = str(ckpt_dir)
    return model, tokenizer, frontend


# ---------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _record_frontend():
    """Record what funasr's WavFrontend computes: kaldi fbank output (before LFR, x32768
    already applied by WavFrontend) and apply_lfr output. Patches module attributes that
    WavFrontend looks up at call time; restores them afterwards."""
    m = _funasr_modules()
    fb_mod, wf = m["fbank_mod"], m["wav_frontend"]
    rec: dict[str, list] = {"fbank": [], "fbank_kwargs": [], "lfr": []}
    orig_fbank, orig_lfr = fb_mod.fbank, wf.apply_lfr

    def fbank_rec(waveform, **kw):
        out = orig_fbank(waveform, **kw)
        rec["fbank"].append(out.detach().clone())
        rec["fbank_kwargs"].append(dict(kw))
        return out

    def lfr_rec(inputs, lfr_m, lfr_n):
        out = orig_lfr(inputs, lfr_m, lfr_n)
        rec["lfr"].append(out.detach().clone())
        return out

    fb_mod.fbank, wf.apply_lfr = fbank_rec, lfr_rec
    try:
        yield rec
    finally:
        fb_mod.fbank, wf.apply_lfr = orig_fbank, orig_lfr


@contextlib.contextmanager
def _record_generate(llm):
    """Capture the ids returned by ``llm.generate`` inside the reference's inference_llm."""
    rec: list = []
    orig = llm.generate

    def gen(*args, **kw):
        out = orig(*args, **kw)
        rec.append(out.detach().clone())
        return out

    llm.generate = gen
    try:
        yield rec
    finally:
        del llm.generate  # drop the instance attribute -> bound method again


def inference_kwargs(model, language, hotwords, itn, n_steps, prev_text) -> dict:
    kw = copy.deepcopy(getattr(model, "_reference_kwargs", {}))
    # Only the keys the FunASRNano inference path reads (AutoModel passes all of config.yaml).
    keep = {k: kw[k] for k in ("dataset_conf",) if k in kw}
    keep.update(
        device="cpu",
        hotwords=list(hotwords or []),
        language=language,
        itn=bool(itn),
        prev_text=prev_text,
        max_length=int(n_steps),
    )
    return keep


def greedy_steps(llm, inputs_embeds, n_steps: int):
    """Step-by-step greedy decode with the HF model and its KV cache, ignoring EOS.

    Returns (step_logits [n_steps, V] float32, tokens [n_steps] int64)."""
    torch = _torch()
    import inspect

    # transformers >= 5.x renamed the KV-cache argument/output ``past_key_values`` -> ``cache``
    # (the old name still works but logs a deprecation warning); use whichever exists.
    cache_arg = "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"

    def _cache_of(o):
        return getattr(o, "cache") if cache_arg == "cache" else o.past_key_values

    emb = inputs_embeds if inputs_embeds.dim() == 3 else inputs_embeds[None]
    S = emb.shape[1]
    logits_all, toks = [], []
    with torch.no_grad():
        out = llm(inputs_embeds=emb, attention_mask=torch.ones(1, S, dtype=torch.long), use_cache=True)
        past = _cache_of(out)
        logits = out.logits[0, -1].float()
        for step in range(n_steps):
            logits_all.append(logits.clone())
            tok = int(torch.argmax(logits))
            toks.append(tok)
            if step + 1 == n_steps:
                break
            out = llm(
                input_ids=torch.tensor([[tok]]),
                attention_mask=torch.ones(1, S + step + 1, dtype=torch.long),
                use_cache=True,
                **{cache_arg: past},
            )
            past = _cache_of(out)
            logits = out.logits[0, -1].float()
    return torch.stack(logits_all).numpy().astype(np.float32), np.asarray(toks, dtype=np.int64)


def _prepare_stage(model, tokenizer, frontend, audio_t, kw) -> dict:
    """Stage 1: the reference's own inference_prepare (fbank -> LFR -> encoder -> adaptor -> splice),
    with the frontend recorded and checked (one fbank / LFR call, no dither, LFR scaled in place)."""
    torch = _torch()
    prompt = model.get_prompt(kw["hotwords"], kw["language"], kw["itn"])
    data_in = [model.generate_chatml(prompt, audio_t)]
    with torch.no_grad(), _record_frontend() as fr:
        inputs_embeds, contents, batch, source_ids, meta = model.inference_prepare(
            data_in, None, ["ref"], tokenizer, frontend, **kw
        )
    if len(fr["fbank"]) != 1 or len(fr["lfr"]) != 1:
        raise RuntimeError(f"expected one fbank/LFR call, got {len(fr['fbank'])}/{len(fr['lfr'])}")
    dither = float(fr["fbank_kwargs"][0].get("dither", float("nan")))
    if dither != 0.0:
        raise RuntimeError(f"reference fbank ran with dither={dither}")
    lfr = fr["lfr"][0]
    # NOTE: SenseVoiceEncoderSmall.forward does ``xs_pad *= output_size ** 0.5`` IN PLACE, so
    # after inference_prepare batch["speech"] holds LFR * sqrt(d), not the LFR features.
    # The recorded apply_lfr output (cloned before the encoder ran) is the LFR record.
    scale = model.audio_encoder.output_size() ** 0.5
    if not torch.equal(batch["speech"][0], lfr * scale):
        raise RuntimeError("batch speech is not the recorded LFR output scaled in place by sqrt(d)")
    return {"prompt": prompt, "fbank": fr["fbank"][0], "lfr": lfr, "dither": dither, "meta": meta,
            "fake_token_len": int(batch["fake_token_len"][0, 0]), "fbank_beg": int(batch["fbank_beg"][0, 0]),
            "prompt_ids": source_ids[0].numpy().astype(np.int64), "emb": inputs_embeds[0].detach().float()}


def _generate_stage(model, tokenizer, frontend, audio_t, kw, greedy, n_steps: int):
    """Stage 3: the reference's own inference (generate + post-processing) -> (results, generate ids
    -1 padded to n_steps, their count, whether they are the stepwise greedy ids up to an EOS)."""
    torch = _torch()
    with torch.no_grad(), _record_generate(model.llm) as gen:
        results, _ = model.inference(
            [audio_t], key=["ref"], tokenizer=tokenizer, frontend=frontend, **kw
        )
    gen_ids = gen[0][0].numpy().astype(np.int64)
    n_gen = len(gen_ids)
    matches = bool(n_gen <= n_steps and np.array_equal(gen_ids, greedy[:n_gen]))
    if matches and n_gen < n_steps:  # generate stopped early: must be on an EOS token
        matches = int(gen_ids[-1]) in EOS_IDS
    gen_pad = np.full(n_steps, -1, dtype=np.int64)
    gen_pad[: min(n_gen, n_steps)] = gen_ids[:n_steps]
    return results, gen_pad, n_gen, matches


def run_reference(model, tokenizer, frontend, audio: np.ndarray, language=None, hotwords=None,
                  itn: bool = True, n_steps: int = 32, prev_text: str = "") -> dict[str, np.ndarray]:
    """Run one clip through the reference and record every stage (see module docstring).

    Keys: fbank [T,80], lfr [T_lfr,560], encoder_out [T_lfr,D_enc], adaptor_out [T_lfr,D_llm]
    (full), fake_token_len, prompt_ids [S] (0 = audio placeholder), fbank_beg,
    inputs_embeds [S,D_llm], step_logits [n_steps,V], greedy_tokens, top2_margin,
    generate_tokens (reference generate ids, -1 padded to n_steps), generate_len,
    greedy_matches_generate, reference_text, reference_text_tn, plus bookkeeping strings
    (user_prompt, prompt_text, fbank_backend, fbank_dither, versions_json).
    """
    torch = _torch()
    audio = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
    audio_t = torch.from_numpy(audio.copy())
    kw = inference_kwargs(model, language, hotwords, itn, n_steps, prev_text)

    # ---- stage 1: the reference's own inference_prepare (fbank -> LFR -> encoder -> adaptor -> splice)
    st = _prepare_stage(model, tokenizer, frontend, audio_t, kw)
    fake_token_len, fbank_beg, prompt_ids, emb = st["fake_token_len"], st["fbank_beg"], st["prompt_ids"], st["emb"]

    # ---- stage 2: stepwise greedy with the HF LLM (KV cache), EOS ignored
    step_logits, greedy = greedy_steps(model.llm, emb, n_steps)
    top2 = np.sort(step_logits, axis=-1)[:, -2:]
    top2_margin = (top2[:, 1] - top2[:, 0]).astype(np.float32)

    # ---- stage 3: the reference's own inference (generate + post-processing)
    results, gen_pad, n_gen, matches = _generate_stage(model, tokenizer, frontend, audio_t, kw, greedy, n_steps)

    pre = tokenizer.decode(prompt_ids[:fbank_beg].tolist())
    post = tokenizer.decode(prompt_ids[fbank_beg + fake_token_len:].tolist())
    prompt_text = f"{pre}<|AUDIO|x{fake_token_len}>{post}"

    return {
        "audio_num_samples": np.asarray(audio.size, dtype=np.int64),
        "fbank": st["fbank"].numpy().astype(np.float32),
        "lfr": st["lfr"].numpy().astype(np.float32),
        "encoder_out": st["meta"]["encoder_out"][0].detach().float().numpy(),
        "adaptor_out": st["meta"]["audio_adaptor_out"][0].detach().float().numpy(),
        "fake_token_len": np.asarray(fake_token_len, dtype=np.int64),
        "prompt_ids": prompt_ids,
        "fbank_beg": np.asarray(fbank_beg, dtype=np.int64),
        "inputs_embeds": emb.numpy().astype(np.float32),
        "step_logits": step_logits,
        "greedy_tokens": greedy,
        "top2_margin": top2_margin,
        "generate_tokens": gen_pad,
        "generate_len": np.asarray(n_gen, dtype=np.int64),
        "greedy_matches_generate": np.asarray(matches),
        "reference_text": np.asarray(results[0]["text"], dtype=np.str_),
        "reference_text_tn": np.asarray(results[0]["text_tn"], dtype=np.str_),
        "user_prompt": np.asarray(st["prompt"], dtype=np.str_),
        "prompt_text": np.asarray(prompt_text, dtype=np.str_),
        "fbank_backend": np.asarray(fbank_backend(), dtype=np.str_),
        "fbank_dither": np.asarray(st["dither"], dtype=np.float64),
        "versions_json": np.asarray(json.dumps(library_versions(), sort_keys=True), dtype=np.str_),
    }


# ---------------------------------------------------------------------------------------
# caching
# ---------------------------------------------------------------------------------------

_MODEL_CACHE: dict[str, tuple] = {}
TEXT_KEYS = ("reference_text", "reference_text_tn", "user_prompt", "prompt_text", "fbank_backend", "versions_json")


def reference_cache_dir() -> Path:
    d = os.environ.get("FUNASR_NANO_REF_CACHE")
    p = Path(d) if d else Path.home() / ".cache" / "funasr_nano" / "reference"
    p.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _short_hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:n]


def _preset_fingerprint(preset: str) -> str:
    from funasr_nano.synthetic.sizes import get_preset

    return _short_hash(get_preset(preset), 12)


def reference_checkpoint(preset: str = "tiny", seed: int = 0) -> Path:
    """Cached :func:`build_reference_checkpoint` (built at most once per key, process-safe)."""
    v = library_versions()
    key = _short_hash({"preset": _preset_fingerprint(preset), "torch": v["torch"], "transformers": v["transformers"],
                       "funasr": v["funasr"], "harness": HARNESS_VERSION}, 12)
    root = reference_cache_dir() / "checkpoints"
    d = root / f"{preset}_seed{seed}_{key}"
    done = d / ".complete"
    if done.exists():
        return d
    with _file_lock(root / f".{d.name}.lock"):
        if not done.exists():
            build_reference_checkpoint(d, preset=preset, seed=seed)
            done.write_text(json.dumps(library_versions()))
    return d


def cached_reference_model(preset: str = "tiny", seed: int = 0):
    """(model, tokenizer, frontend) for a cached checkpoint, loaded once per process."""
    d = str(reference_checkpoint(preset, seed))
    if d not in _MODEL_CACHE:
        _MODEL_CACHE[d] = load_reference_model(d)
    return _MODEL_CACHE[d]


def _audio_for(audio_name: str, audio: np.ndarray | None) -> np.ndarray:
    if audio is not None:
        return np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
    from funasr_nano.synthetic.signals import standard_clips

    clips = standard_clips()
    if audio_name not in clips:
        raise KeyError(f"unknown clip {audio_name!r}; standard clips: {list(clips)}")
    return clips[audio_name]


def reference_key(preset: str, seed: int, audio_name: str, audio: np.ndarray, *, language=None,
                  hotwords=None, itn=True, n_steps=32, prev_text="") -> str:
    opts = {
        "preset": preset, "preset_fp": _preset_fingerprint(preset), "seed": seed, "audio": audio_name,
        "audio_sha": hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()[:16],
        "language": language, "hotwords": list(hotwords or []), "itn": bool(itn), "n_steps": int(n_steps),
        "prev_text": prev_text, "versions": library_versions(),
    }
    return _short_hash(opts, 16)


def reference_npz(preset: str = "tiny", seed: int = 0, audio_name: str = "speech_3s", *, language=None,
                  hotwords=None, itn: bool = True, n_steps: int = 32, prev_text: str = "",
                  audio: np.ndarray | None = None, refresh: bool = False) -> dict[str, np.ndarray]:
    """Reference record for (preset, seed, clip, prompt options), cached as ``.npz`` (+ ``.json``).

    ``audio_name`` names a clip of :func:`funasr_nano.synthetic.signals.standard_clips` unless
    ``audio`` is given (then the name is only a label; the audio hash is part of the key).
    """
    x = _audio_for(audio_name, audio)
    opts = dict(language=language, hotwords=list(hotwords or []), itn=itn, n_steps=n_steps, prev_text=prev_text)
    key = reference_key(preset, seed, audio_name, x, **opts)
    root = reference_cache_dir() / "records"
    path = root / f"{preset}_s{seed}_{audio_name}_{key}.npz"
    if not refresh and path.exists():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    with _file_lock(root / f".{path.stem}.lock"):
        if not refresh and path.exists():
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        model, tok, fe = cached_reference_model(preset, seed)
        rec = run_reference(model, tok, fe, x, **opts)
        rec["checkpoint_dir"] = np.asarray(str(reference_checkpoint(preset, seed)), dtype=np.str_)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **rec)
        os.replace(tmp, path)
        side = {k: str(rec[k]) for k in TEXT_KEYS}
        side.update(options=opts, preset=preset, seed=seed, audio=audio_name,
                    greedy_matches_generate=bool(rec["greedy_matches_generate"]),
                    greedy_tokens=rec["greedy_tokens"].tolist(),
                    generate_tokens=rec["generate_tokens"][: int(rec["generate_len"])].tolist())
        path.with_suffix(".json").write_text(json.dumps(side, ensure_ascii=False, indent=2), encoding="utf-8")
    return rec


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def _summary(name: str, rec: dict) -> str:
    return (f"{name}: T={rec['fbank'].shape[0]} T_lfr={rec['lfr'].shape[0]} L_a={int(rec['fake_token_len'])} "
            f"S={rec['prompt_ids'].shape[0]} greedy==generate={bool(rec['greedy_matches_generate'])} "
            f"min_margin={float(rec['top2_margin'].min()):.4g} text={str(rec['reference_text'])[:60]!r}")


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="checkpoint directory (built unless model.pt exists)")
    ap.add_argument("--clips", default="", help="comma-separated standard clip names (default: all)")
    ap.add_argument("--n-steps", type=int, default=32)
    ap.add_argument("--language", default=None)
    ap.add_argument("--hotwords", default="", help="comma-separated")
    ap.add_argument("--no-itn", action="store_true")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave default)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.threads:
        _torch().set_num_threads(args.threads)

    from funasr_nano.synthetic.signals import standard_clips

    out = Path(args.out)
    t0 = time.perf_counter()
    print(f"[info] torch threads={_torch().get_num_threads()} loadavg={os.getloadavg()}", flush=True)
    if args.rebuild or not (out / "model.pt").exists():
        c = time.process_time()
        build_reference_checkpoint(out, preset=args.preset, seed=args.seed)
        print(f"[timing] build_reference_checkpoint({args.preset}): {time.perf_counter() - t0:.1f}s wall, "
              f"{time.process_time() - c:.1f}s cpu; model.pt={os.path.getsize(out / 'model.pt'):,} bytes", flush=True)
    t1, c = time.perf_counter(), time.process_time()
    model, tok, fe = load_reference_model(out)
    print(f"[timing] load_reference_model: {time.perf_counter() - t1:.1f}s wall, {time.process_time() - c:.1f}s cpu; "
          f"fbank backend: {fbank_backend()}", flush=True)
    clips = standard_clips()
    names = [c for c in args.clips.split(",") if c] or list(clips)
    rdir = out / "reference"
    rdir.mkdir(exist_ok=True)
    hot = [h for h in args.hotwords.split(",") if h]
    for name in names:
        t2, c = time.perf_counter(), time.process_time()
        rec = run_reference(model, tok, fe, clips[name], language=args.language, hotwords=hot,
                            itn=not args.no_itn, n_steps=args.n_steps)
        dt, dc = time.perf_counter() - t2, time.process_time() - c
        np.savez(rdir / f"{name}.npz", **rec)
        (rdir / f"{name}.json").write_text(json.dumps({k: str(rec[k]) for k in TEXT_KEYS}, ensure_ascii=False, indent=2),
                                           encoding="utf-8")
        print(f"[timing] run_reference {name} ({clips[name].size / 16000:.1f}s audio): {dt:.1f}s wall, {dc:.1f}s cpu, "
              f"loadavg={os.getloadavg()[0]:.1f} | {_summary(name, rec)}",
              flush=True)
    print(f"[timing] total: {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
