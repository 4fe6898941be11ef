"""One loader, every published checkpoint form (`funasr_nano.checkpoint.forms`).

* official ``model.pt`` in every wrapping FunASR's own loader accepts, written with real
  ``torch.save``: same parameters as the plain file, ignored entries named;
* the mlx-audio / mlx-community form, written at test time by mlx-audio's own converter
  (``mlx_audio.stt.models.fun_asr_nano.convert``) and quantizer (``mlx_audio.convert``) from the
  reference harness's ``model.pt``: float = the official form bit for bit, quantized = stated fidelity;
* incomplete files of each form: errors that name the form and the key.

The Transformers (-hf) form's numeric proof is in tests/test_forms_hf.py.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

import funasr_nano
from funasr_nano.checkpoint import CheckpointError
from funasr_nano.checkpoint.torch_reader import read_model_pt
from funasr_nano.checkpoint.torch_writer import write_model_pt
from funasr_nano.checkpoint.forms import CheckpointWarning, detect_form
from funasr_nano.synthetic.signals import speech_like

from tests.support.optional import need
from tests.support.reference_harness import reference_checkpoint

torch = need("torch")
need("funasr")  # the reference harness builds the checkpoints

N_TOKENS = 8


def _params(asr) -> dict:
    return dict(tree_flatten(asr.net.parameters()))


def _same_params(a, b):
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    bad = [k for k in pa if pa[k].dtype != pb[k].dtype or not mx.array_equal(pa[k], pb[k]).item()]
    assert not bad, bad[:5]


def _copy_dir_without_weights(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.pt", "*.safetensors", "*.index.json"))
    return dst


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("forms_cache")


@pytest.fixture(scope="module")
def wav():
    return speech_like(2.0, seed=0)


@pytest.fixture(scope="module")
def base(tiny_ckpt, cache):
    return funasr_nano.load(tiny_ckpt, cache_dir=cache)


@pytest.fixture(scope="module")
def torch_sd(tiny_ckpt):
    return torch.load(tiny_ckpt / "model.pt", map_location="cpu", weights_only=True)["state_dict"]


# ----------------------------------------------------------------------------- official model.pt variants


def _variants(sd):
    extras = {"epoch": 7, "step": np.int64(1234), "best_loss": np.float32(0.25), "lr": np.float64(1e-4),
              "flag": np.bool_(True), "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.98)}]}}
    return {
        "top_level": (dict(sd), []),
        "state_dict": ({"state_dict": sd}, []),
        "model_state_dict+trainer": (
            {"model_state_dict": sd, **extras},
            ["epoch (int 7)", "step (numpy.int64 1234)", "best_loss (numpy.float32 0.25)",
             "lr (numpy.float64 0.0001)", "flag (numpy.bool True)", "optimizer (dict of 2)"]),
        "model+epoch": ({"model": sd, "epoch": 3}, ["epoch (int 3)"]),
        "state_dict.model": ({"state_dict": {"model": sd, "num_updates": 5}}, ["state_dict.num_updates (int 5)"]),
        "module_prefix": ({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, []),
        "scalars_inside": ({"state_dict": {**sd, "scale": np.float32(2.0), "note": "fine-tuned"}},
                           ["state_dict.scale (numpy.float32 2.0)", "state_dict.note (str 'fine-tuned')"]),
    }


@pytest.mark.parametrize("variant", list(_variants({})))
def test_official_variants_load_like_the_plain_file(variant, tiny_ckpt, torch_sd, base, tmp_path, cache):
    obj, ignored = _variants(torch_sd)[variant]
    d = _copy_dir_without_weights(tiny_ckpt, tmp_path / variant)
    torch.save(obj, d / "model.pt")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        asr = funasr_nano.load(d, cache_dir=cache)
    assert asr.checkpoint_form == "official"
    _same_params(asr, base)
    # the numeric entries really are numpy scalars in the file, not just ints
    assert asr.ignored_entries == ignored
    msgs = [str(x.message) for x in w if issubclass(x.category, CheckpointWarning)]
    if ignored:
        assert len(msgs) == 1 and all(e in msgs[0] for e in ignored), msgs
    else:
        assert not msgs
    # reloading from the (fresh) cache still reports them
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert funasr_nano.load(d, cache_dir=cache).ignored_entries == ignored


def _rewrite_pickle(path: Path, fn):
    with zipfile.ZipFile(path) as zf:
        records = {n: zf.read(n) for n in zf.namelist()}
    name = next(n for n in records if n.endswith("data.pkl"))
    records[name] = fn(records[name])
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in records.items():
            zf.writestr(n, data)


def test_numpy1_scalar_spelling(tiny_ckpt, torch_sd, base, tmp_path, cache):
    """numpy < 2 pickles scalars as numpy.core.multiarray.scalar (numpy 2: numpy._core)."""
    d = _copy_dir_without_weights(tiny_ckpt, tmp_path / "np1")
    torch.save({"state_dict": torch_sd, "step": np.int64(9)}, d / "model.pt")
    _rewrite_pickle(d / "model.pt", lambda b: b.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    with zipfile.ZipFile(d / "model.pt") as zf:
        assert b"numpy.core.multiarray\nscalar" in zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    with pytest.warns(CheckpointWarning, match="step"):
        asr = funasr_nano.load(d, cache_dir=cache)
    assert asr.ignored_entries == ["step (numpy.int64 9)"]
    _same_params(asr, base)


@pytest.mark.parametrize("what,value,match", [
    ("ndarray", np.arange(3), "_reconstruct"),
    ("str scalar", np.str_("hi"), "numpy dtype"),
    ("object", {1, 2}, "builtins.set"),
])
def test_other_non_tensor_objects_stay_refused(what, value, match, tmp_path):
    p = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": value}, p)
    with pytest.raises(CheckpointError, match=match):
        read_model_pt(p)


def test_official_missing_key_names_form_and_key(tiny_ckpt, tmp_path, cache):
    w = read_model_pt(tiny_ckpt / "model.pt")
    gone = "audio_encoder.encoders.1.self_attn.linear_q_k_v.weight"
    del w[gone]
    w["audio_encoder.extra.weight"] = mx.zeros((2,))
    d = _copy_dir_without_weights(tiny_ckpt, tmp_path / "incomplete")
    write_model_pt(d / "model.pt", w)
    with pytest.raises(CheckpointError) as e:
        funasr_nano.load(d, cache_dir=cache)
    msg = str(e.value)
    assert "official FunASR checkpoint" in msg and gone in msg and "audio_encoder.extra.weight" in msg


def test_unknown_form(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(CheckpointError, match="not a Fun-ASR-Nano checkpoint in any known form.*whisper"):
        funasr_nano.load(tmp_path)
    with pytest.raises(CheckpointError, match="neither config.yaml nor"):
        detect_form(tmp_path / "nothing")


# ----------------------------------------------------------------------------- Transformers -hf: errors


@pytest.fixture(scope="module")
def tiny_ref():
    return reference_checkpoint("tiny", 0)


@pytest.fixture(scope="module")
def tiny_hf(tiny_ref, tmp_path_factory):
    need("transformers")
    from funasr_nano.checkpoint.hf import write_hf_checkpoint

    return write_hf_checkpoint(tiny_ref, tmp_path_factory.mktemp("hf") / "tiny-hf")


def _edit_safetensors(src: Path, dst: Path, fn) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    w = dict(mx.load(str(src / "model.safetensors")))
    fn(w)
    mx.save_safetensors(str(dst / "model.safetensors"), w)
    return dst


def test_hf_form_is_detected_and_matches_official(tiny_hf, tiny_ref, cache):
    assert detect_form(tiny_hf) == "transformers"
    assert len(mx.load(str(tiny_hf / "model.safetensors"))) == 149  # 130 official + 5 layers x 4 - tied head
    _same_params(funasr_nano.load(tiny_hf), funasr_nano.load(tiny_ref, cache_dir=cache))


def test_hf_missing_and_extra_keys(tiny_hf, tmp_path):
    gone = "model.audio_tower.layers.2.self_attn.k_proj.weight"
    d = _edit_safetensors(tiny_hf, tmp_path / "missing", lambda w: w.pop(gone))
    with pytest.raises(CheckpointError) as e:
        funasr_nano.load(d)
    assert "Transformers (-hf) checkpoint" in str(e.value) and gone in str(e.value) and "1 missing" in str(e.value)
    extra = "model.audio_tower.layers.2.self_attn.extra_proj.weight"
    d = _edit_safetensors(tiny_hf, tmp_path / "extra", lambda w: w.__setitem__(extra, mx.zeros((2,))))
    with pytest.raises(CheckpointError) as e:
        funasr_nano.load(d)
    assert "Transformers (-hf) checkpoint" in str(e.value) and extra in str(e.value) and "1 unexpected" in str(e.value)
    d = _edit_safetensors(tiny_hf, tmp_path / "shape", lambda w: w.__setitem__(
        "model.multi_modal_projector.linear_1.bias", mx.zeros((3,))))
    with pytest.raises(CheckpointError, match="(?s)Transformers .*mis-shaped.*audio_adaptor.linear1.bias"):
        funasr_nano.load(d)
    d = tmp_path / "notok"
    shutil.copytree(tiny_hf, d, ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(CheckpointError, match="Transformers .*without its tokenizer"):
        funasr_nano.load(d)
    d = tmp_path / "noweights"
    shutil.copytree(tiny_hf, d, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(CheckpointError, match="Transformers .*without weights"):
        funasr_nano.load(d)


def test_save_quantized_from_other_forms(tiny_hf, mlxa_float, wav, tmp_path):
    """`precision.save_quantized` of a model loaded from the -hf / mlx-audio forms reloads (the Qwen3
    config is written out of their config.json, not copied from it)."""
    from funasr_nano.precision.io import save_quantized

    for name, src in (("hf", tiny_hf), ("mlxa", mlxa_float)):
        asr = funasr_nano.load(src, preset="q4-g32")
        again = funasr_nano.load(save_quantized(asr, tmp_path / name))
        assert again.preset == "q4-g32" and again.checkpoint_form == "precision" and again.synthetic == asr.synthetic
        assert again.transcribe(wav, max_new_tokens=4, ignore_eos=True).tokens == \
            asr.transcribe(wav, max_new_tokens=4, ignore_eos=True).tokens


# ----------------------------------------------------------------------------- mlx-audio / mlx-community


def _mlx_audio_convert(ref_dir: Path, out: Path) -> Path:
    """mlx-audio's own converter (bf16, as mlx-community/Fun-ASR-Nano-2512)."""
    conv = need("mlx_audio.stt.models.fun_asr_nano.convert")
    out = conv.convert(str(ref_dir), str(out), include_examples=False)
    # mlx-audio's converter writes the released model's encoder/adaptor sizes whatever the source
    # (its RUNTIME_CONFIG); give the tiny harness model its own, as a converter of it would.
    import yaml

    y = yaml.safe_load((ref_dir / "config.yaml").read_text())
    cfg = json.loads((out / "config.json").read_text())
    if cfg["audio_encoder_conf"]["output_size"] != y["audio_encoder_conf"]["output_size"]:
        for k in ("output_size", "attention_heads", "linear_units", "num_blocks", "tp_blocks"):
            cfg["audio_encoder_conf"][k] = y["audio_encoder_conf"][k]
        for k in ("ffn_dim", "llm_dim", "encoder_dim", "n_layer"):
            cfg["audio_adaptor_conf"][k] = y["audio_adaptor_conf"][k]
        (out / "config.json").write_text(json.dumps(cfg, indent=2))
        (out / "PATCHED_SIZES").write_text("encoder/adaptor sizes set from the source's config.yaml\n")
    return Path(out)


def _mlx_audio_quantize(float_dir: Path, out: Path, bits: int) -> Path:
    """`mlx_audio.convert --quantize` (how the -4bit/-8bit repos are made); affine, group 64."""
    mconv = need("mlx_audio.convert")
    mconv.convert(str(float_dir), str(out), quantize=True, q_bits=bits, q_group_size=64, model_domain="stt")
    return out


@pytest.fixture(scope="module")
def mlxa_float(tiny_ref, tmp_path_factory):
    return _mlx_audio_convert(tiny_ref, tmp_path_factory.mktemp("mlxa") / "Fun-ASR-Nano-mlx")


@pytest.fixture(scope="module")
def ref_fp32(tiny_ref, cache):
    return funasr_nano.load(tiny_ref, cache_dir=cache)


def test_mlx_audio_float_equals_official(mlxa_float, ref_fp32, wav):
    from funasr_nano.bench.fidelity import prompt_embeddings, teacher_forced_logits

    assert detect_form(mlxa_float) == "mlx-audio"
    stored = mx.load(str(mlxa_float / "model.safetensors"))
    assert "llm.lm_head.weight" not in stored and stored[next(k for k in stored if "fsmn" in k)].shape[-1] == 1
    asr = funasr_nano.load(mlxa_float)
    assert asr.checkpoint_form == "mlx-audio" and asr.preset == "fp32"
    _same_params(asr, ref_fp32)
    a = ref_fp32.transcribe(wav, max_new_tokens=N_TOKENS, ignore_eos=True)
    b = asr.transcribe(wav, max_new_tokens=N_TOKENS, ignore_eos=True)
    assert a.tokens == b.tokens and a.text == b.text
    emb = prompt_embeddings(ref_fp32, wav)
    np.testing.assert_array_equal(np.array(teacher_forced_logits(ref_fp32, emb, a.tokens)),
                                  np.array(teacher_forced_logits(asr, prompt_embeddings(asr, wav), a.tokens)))


# Fidelity of the quantized mlx-audio forms (tiny harness weights, 2 s speech_like, 8 teacher-forced
# tokens, reference = the official form at fp32), measured (x86 CPU, OpenBLAS):
#   q4: dequantized weights rel err 0.093; mean KL 4.7e-4, top-1 1.00 (ours, q4-llm preset on the same weights: 4.6e-4)
#   q8: dequantized weights rel err 0.0071; mean KL 2.3e-6, top-1 1.00 (ours, q8-llm: 5.2e-6)
# Bounds: the dequantized weights are within the quantization error of the bf16 originals (a
# module mapped to the wrong tensor has rel err ~1.4), and the next-token distributions are as
# close to the float model's as this project's own quantization of the same weights (the loaded
# tensors are mlx-audio's, so a wrong scale dtype/group size/bit width would show here).
MLXA_BOUNDS = {4: {"weights": 0.15, "mean_kl": 5e-3}, 8: {"weights": 0.015, "mean_kl": 5e-5}}


@pytest.mark.parametrize("bits", [4, 8])
def test_mlx_audio_quantized_fidelity(bits, mlxa_float, tiny_ref, ref_fp32, wav, tmp_path, cache):
    from funasr_nano.bench.fidelity import TeacherForcedReference, teacher_forced_fidelity
    from funasr_nano.model.fun_asr_nano import FunASRNano
    from funasr_nano.precision.plan import parse_preset
    from funasr_nano.precision.quantize import quantization_map

    qdir = _mlx_audio_quantize(mlxa_float, tmp_path / f"q{bits}", bits)
    cfg = json.loads((qdir / "config.json").read_text())
    assert cfg["quantization"] == {"group_size": 64, "bits": bits, "mode": "affine"}
    asr = funasr_nano.load(qdir)
    assert asr.checkpoint_form == "mlx-audio"
    assert asr.preset == f"q{bits}-llm+fp32-audio" and asr.dtype == mx.float32
    quantized = {p: m for p, m in tree_flatten(asr.net.leaf_modules(), is_leaf=nn.Module.is_module)
                 if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))}
    # exactly the modules this project's own q{bits}-llm preset quantizes (mlx-audio: llm.model.*)
    assert set(quantized) == set(quantization_map(FunASRNano(asr.cfg), parse_preset(f"q{bits}-llm")))
    assert all(m.bits == bits and m.group_size == 64 and m.scales.dtype == mx.float32 for m in quantized.values())

    # mapping: every dequantized matrix is the quantization of its own official tensor
    official = read_model_pt(tiny_ref / "model.pt")
    worst = 0.0
    for p, m in quantized.items():
        deq = mx.dequantize(m.weight, m.scales, m.biases, group_size=64, bits=bits)
        w = official[p + ".weight"].astype(mx.float32)
        worst = max(worst, float(mx.linalg.norm(deq - w) / mx.linalg.norm(w)))
    assert worst < MLXA_BOUNDS[bits]["weights"], worst

    ref = TeacherForcedReference(ref_fp32, wav, n_tokens=N_TOKENS)
    theirs = teacher_forced_fidelity(None, asr, reference=ref)
    ours = teacher_forced_fidelity(None, funasr_nano.load(tiny_ref, preset=f"q{bits}-llm", cache_dir=cache),
                                   reference=ref)
    print(f"\n[mlx-audio q{bits}] weights rel err {worst:.3g}; mean KL vs official fp32: mlx-audio "
          f"{theirs['mean_kl']:.3g} (top-1 {theirs['top1_agreement']:.2f}), ours q{bits}-llm {ours['mean_kl']:.3g} "
          f"(top-1 {ours['top1_agreement']:.2f})")
    assert theirs["n_tokens"] == N_TOKENS and theirs["top1_agreement"] >= 0.75
    assert theirs["mean_kl"] <= MLXA_BOUNDS[bits]["mean_kl"], theirs
    assert theirs["mean_kl"] <= 3 * ours["mean_kl"], (theirs, ours)
    # a stored quantization cannot be re-planned
    with pytest.raises(ValueError, match="stored quantized"):
        funasr_nano.load(qdir, preset="q8" if bits == 4 else "q4")
    bf = funasr_nano.load(qdir, dtype="bfloat16")
    assert bf.dtype == mx.bfloat16 and bf.audio_dtype == mx.float32 and bf.plan.llm_compute == "bf16"
    assert all(m.scales.dtype == mx.bfloat16 for p, m in tree_flatten(bf.net.leaf_modules(), is_leaf=nn.Module.is_module)
               if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)))
    assert len(bf.transcribe(wav, max_new_tokens=4, ignore_eos=True).tokens) == 4


def test_mlx_audio_incomplete(mlxa_float, tmp_path):
    gone = "audio_encoder.encoders.0.self_attn.fsmn_block.weight"
    d = _edit_safetensors(mlxa_float, tmp_path / "missing", lambda w: w.pop(gone))
    with pytest.raises(CheckpointError) as e:
        funasr_nano.load(d)
    assert "mlx-audio" in str(e.value) and gone in str(e.value) and "missing" in str(e.value)
    d = _edit_safetensors(mlxa_float, tmp_path / "extra", lambda w: w.__setitem__("llm.model.extra.weight", mx.zeros((2,))))
    with pytest.raises(CheckpointError, match="(?s)mlx-audio.*unexpected.*llm.model.extra.weight"):
        funasr_nano.load(d)
    # quantized tensors without the config's quantization block
    d = _copy_dir_without_weights(mlxa_float, tmp_path / "noquant")

    def quantize_one(w):
        q, s, b = mx.quantize(w["llm.model.layers.0.mlp.up_proj.weight"].astype(mx.float32), 64, 4)
        w.update({"llm.model.layers.0.mlp.up_proj.weight": q, "llm.model.layers.0.mlp.up_proj.scales": s,
                  "llm.model.layers.0.mlp.up_proj.biases": b})
    shutil.rmtree(d)
    d = _edit_safetensors(mlxa_float, tmp_path / "noquant", quantize_one)
    with pytest.raises(CheckpointError, match="mlx-audio.*no 'quantization' block"):
        funasr_nano.load(d)


# ----------------------------------------------------------------------------- one cache copy per weights


def _entries(root: Path) -> dict[str, str]:
    """cache entry -> "weights" (holds safetensors) or "alias"."""
    return {e.name: ("alias" if (e / "alias.json").is_file() else "weights")
            for e in root.iterdir() if e.is_dir() and not e.name.startswith(".")}


def test_cache_holds_one_copy_per_set_of_weights(tiny_ckpt, torch_sd, base, tmp_path, tiny_hf, mlxa_float, capfd):
    from funasr_nano.synthetic import write_synthetic_checkpoint

    root = tmp_path / "cache"
    a = _copy_dir_without_weights(tiny_ckpt, tmp_path / "a")
    torch.save({"state_dict": torch_sd}, a / "model.pt")
    b = _copy_dir_without_weights(tiny_ckpt, tmp_path / "b")  # same tensors, a trainer's wrapping
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in torch_sd.items()}, "epoch": 4}, b / "model.pt")

    _same_params(funasr_nano.load(a, cache_dir=root), base)
    assert list(_entries(root).values()) == ["weights"]
    capfd.readouterr()
    with pytest.warns(CheckpointWarning, match="epoch"):
        asr_b = funasr_nano.load(b, cache_dir=root)
    assert "reused, no copy" in capfd.readouterr().err
    _same_params(asr_b, base)
    assert asr_b.ignored_entries == ["epoch (int 4)"]
    assert sorted(_entries(root).values()) == ["alias", "weights"]
    assert sum(1 for _ in root.rglob("*.safetensors")) == 1
    # fresh on the next load: nothing is converted or compared again
    with pytest.warns(CheckpointWarning):
        funasr_nano.load(b, cache_dir=root)
    assert "converting" not in capfd.readouterr().err

    # the safetensors forms of the same weights add nothing to the cache
    before = _entries(root)
    _same_params(funasr_nano.load(tiny_hf, cache_dir=root), funasr_nano.load(mlxa_float, cache_dir=root))
    assert _entries(root) == before

    # other weights of the same layout get their own copy (compared, found different)
    c = write_synthetic_checkpoint(tmp_path / "c", preset="tiny", seed=1)
    funasr_nano.load(c, cache_dir=root)
    assert sorted(_entries(root).values()) == ["alias", "weights", "weights"]

    # when a's model.pt changes, a is re-converted and b's alias goes stale: b converts its own copy
    torch.save({"state_dict": {k: v + 1 if v.is_floating_point() else v for k, v in torch_sd.items()}}, a / "model.pt")
    os.utime(a / "model.pt", ns=(1, 1))
    funasr_nano.load(a, cache_dir=root)
    with pytest.warns(CheckpointWarning):
        _same_params(funasr_nano.load(b, cache_dir=root), base)
    assert sorted(_entries(root).values()) == ["weights", "weights", "weights"]


@pytest.mark.slow
def test_mlx_audio_real_config(tmp_path_factory):
    """mlx-audio's converter, unmodified, on the released model's shapes (harness weights): the
    stored tensors are the official ones bit for bit, and the loaded model gives funasr's greedy
    tokens and logits (same record and tolerance as tests/test_parity.py)."""
    from funasr_nano.checkpoint.cache import load_checkpoint_weights
    from funasr_nano.checkpoint.mlx_audio import load_weights

    from tests.support.reference_harness import reference_npz
    from test_forms_hf import release_memory

    ref_dir = reference_checkpoint("real", 0)
    out = _mlx_audio_convert(ref_dir, tmp_path_factory.mktemp("mlxa_real") / "Fun-ASR-Nano-2512-mlx")
    assert not (out / "PATCHED_SIZES").exists()  # its config.json is used exactly as written
    theirs = load_weights(out)
    official = load_checkpoint_weights(ref_dir)
    assert set(theirs) == set(official) - {"llm.lm_head.weight"} and len(theirs) == 1260
    bad = [k for k in theirs if theirs[k].dtype != official[k].dtype or not mx.array_equal(theirs[k], official[k]).item()]
    assert not bad, bad[:5]
    del theirs, official
    release_memory()

    rec = reference_npz("real", 0, "speech_3s", n_steps=32)
    asr = funasr_nano.load(out)
    assert asr.checkpoint_form == "mlx-audio"
    from funasr_nano.bench.fidelity import teacher_forced_logits

    greedy = rec["greedy_tokens"].tolist()
    logits = np.array(teacher_forced_logits(asr, mx.array(rec["inputs_embeds"])[None], greedy))
    err = max(float(np.linalg.norm(logits[i] - rec["step_logits"][i]) / np.linalg.norm(rec["step_logits"][i]))
              for i in range(len(greedy)))
    print(f"\n[mlx-audio real] logits vs funasr rel err {err:.2e}")
    assert err < 1e-4
    assert logits.argmax(-1).tolist() == greedy  # the stored tensors are the official ones, so the
    # free-running decode is test_parity's (not repeated here: ~30 s on the 2-core machine)
    del asr
    release_memory()
