"""The backend policy: defaults per backend (resolved from a backend name, so Metal and CUDA are
checked on this CPU machine), overrides, what load() does with it, and where it is recorded."""

import json
import re
import subprocess
import sys
from pathlib import Path

import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

import funasr_nano
from funasr_nano.runtime.backend import ENV_VAR, FIELDS, BackendPolicy, PolicyError, default_policy, detect_backend, parse_overrides, resolve_policy

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_per_backend():
    cpu, metal, cuda = (default_policy(b) for b in ("cpu", "metal", "cuda"))
    # CPU: as measured on the Linux machine (dequantize from 4 rows, float32 compute, compiled
    # step below that row count with the table RoPE / grouped attention, numpy frontend)
    assert (cpu.dequant_min_rows, cpu.quant_compute, cpu.compiled_decode_rows, cpu.step_ops, cpu.frontend) == \
        (4, "fp32", 3, "tables", "numpy")
    assert cpu.dequant_chunked and cpu.reference_blas_check
    # Metal: MLX's own practice (mlx-lm): never dequantize, bf16 compute, growing-cache decode
    assert metal.dequant_min_rows is None and metal.quant_compute == "bf16"
    assert metal.compiled_decode_rows == 0 and metal.step_ops == "fast" and metal.frontend == "mlx"
    assert not metal.dequant_chunked and not metal.reference_blas_check
    # CUDA: as measured on the lent GPUs (quantized_matmul with bf16 activations at every row count)
    assert cuda.dequant_min_rows is None and cuda.quant_compute == "bf16" and cuda.compiled_decode_rows == 0
    assert cuda.encoder_eval_every == metal.encoder_eval_every == 10 and cpu.encoder_eval_every == 0
    # bf16 groups compute in float32 on the CPU (no BLAS path for bf16 GEMMs), as stored on GPUs
    assert (cpu.bf16_audio_compute, metal.bf16_audio_compute, cuda.bf16_audio_compute) == ("fp32", "bf16", "bf16")
    assert (cpu.bf16_llm_compute, metal.bf16_llm_compute, cuda.bf16_llm_compute) == ("fp32", "bf16", "bf16")
    # the FSMN as K shifted multiply-adds on the CPU, as one grouped conv1d on GPUs (fewer kernels)
    assert (cpu.fsmn_conv, metal.fsmn_conv, cuda.fsmn_conv) == (False, True, True)
    assert resolve_policy(backend="metal", environ={}) == metal
    assert resolve_policy(environ={}) == default_policy(detect_backend())
    assert detect_backend() == "cpu"  # the test machines run MLX's CPU backend


def test_decisions():
    metal, cpu = default_policy("metal"), default_policy("cpu")
    assert not metal.dense_path(10_000)
    assert [cpu.dense_path(r) for r in (1, 3, 4, 200)] == [False, False, True, True]
    assert cpu.use_compiled(1, quantized=True) and cpu.use_compiled(3, quantized=False)
    assert not cpu.use_compiled(4, quantized=False)
    forced = resolve_policy("compiled_decode_rows=64", environ={})
    assert forced.use_compiled(32, quantized=False)
    # the dense path evaluates eagerly and cannot be traced: never compiled together
    assert not forced.use_compiled(4, quantized=True) and forced.use_compiled(3, quantized=True)
    assert not metal.use_compiled(1, quantized=False)


def test_overrides_string_dict_and_environment():
    p = resolve_policy("dequant_min_rows=never, quant_compute=bfloat16", environ={})
    assert p.backend == "cpu" and p.dequant_min_rows is None and p.quant_compute == "bf16"
    assert p.overridden == ("dequant_min_rows", "quant_compute")
    assert "overridden: dequant_min_rows, quant_compute" in p.summary()
    assert resolve_policy({"dequant_min_rows": 8}, environ={}).dequant_min_rows == 8
    # a backend name starts from that backend's defaults; fields after it override those
    p = resolve_policy("cuda,dequant_min_rows=8", environ={})
    assert p.backend == "cuda" and p.dequant_min_rows == 8 and p.quant_compute == "bf16"
    # the environment applies first, the argument wins field by field
    env = {ENV_VAR: "metal;compiled_decode_rows=2"}
    assert resolve_policy(environ=env).backend == "metal" and resolve_policy(environ=env).compiled_decode_rows == 2
    p = resolve_policy("compiled_decode_rows=5", environ=env)
    assert (p.backend, p.compiled_decode_rows, p.dequant_min_rows) == ("metal", 5, None)
    # a BackendPolicy passes through; spec() rebuilds it exactly
    for b in ("cpu", "metal", "cuda"):
        q = resolve_policy(f"{b},dequant_min_rows=12,frontend=mlx", environ={})
        assert resolve_policy(q) is q
        assert resolve_policy(q.spec(), environ={}) == q
        assert json.loads(json.dumps(q.to_dict()))["backend"] == b


@pytest.mark.parametrize("bad, msg", [
    ("vulkan", "unknown backend"),
    ("dequant_rows=4", "unknown policy field"),
    ("dequant_min_rows=four", "takes an integer"),
    ("dequant_min_rows=-3", "dequant_min_rows must be"),
    ("frontend=torch", "frontend"),
    ("quant_compute=int8", "quant_compute"),
    ("dequant_chunked=maybe", "yes/no"),
    ("bf16_audio_compute=fp16", "bf16_audio_compute"),
    ("bf16_llm_compute=q4", "bf16_llm_compute"),
])
def test_bad_overrides(bad, msg):
    with pytest.raises(PolicyError, match=msg):
        resolve_policy(bad, environ={})


def test_bad_environment_is_an_error(tiny_ckpt, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "dequant_min_rows=lots")
    with pytest.raises(PolicyError, match="dequant_min_rows"):
        funasr_nano.load(tiny_ckpt)


def _quantized(net):
    return [m for _, m in tree_flatten(net.leaf_modules(), is_leaf=nn.Module.is_module)
            if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))]


@pytest.mark.parametrize("backend, compute, dense, chunked", [
    ("cpu", "fp32", 4, True), ("metal", "bf16", None, False), ("cuda", "bf16", None, False)])
def test_load_applies_the_policy(tiny_ckpt, backend, compute, dense, chunked):
    asr = funasr_nano.load(tiny_ckpt, preset="q4-g32", policy=backend)
    assert asr.policy == default_policy(backend)
    assert asr.plan.llm_compute == compute and asr.plan.audio_compute == compute
    assert asr.preset == ("q4-g32" if compute == "fp32" else f"q4-g32@{compute}")  # names are policy-independent
    layers = _quantized(asr.net)
    assert layers and all(m.dense_min_rows == dense and m.dense_chunked == chunked for m in layers)
    # an explicit compute dtype in the preset wins over the policy's
    assert funasr_nano.load(tiny_ckpt, preset="q4-g32@fp32", policy=backend).plan.llm_compute == "fp32"


def test_bf16_compute(tiny_ckpt):
    """CPU default: `bf16` keeps every matrix bf16 but computes both groups in float32 (norms,
    biases, FSMN taps float32; MLX upcasts each matrix at its matmul), and says so in its name. It
    then equals the float32 model whose matrices were rounded to bf16: encoder output and logits."""
    import mlx.core as mx
    import numpy as np

    from funasr_nano.bench.fidelity import prompt_embeddings, teacher_forced_logits
    from funasr_nano.model import frontend as fe
    from funasr_nano.synthetic.signals import speech_like

    wav = speech_like(1.5, 3)
    feats = mx.array(fe.features(wav, funasr_nano.load(tiny_ckpt).cfg.frontend))
    cpu = funasr_nano.load(tiny_ckpt, preset="bf16")
    summary = cpu.policy.summary()
    assert "bf16 audio computes fp32" in summary and "bf16 llm computes fp32" in summary
    assert cpu.preset == "bf16@fp32" and (cpu.plan.audio_compute, cpu.plan.llm_compute) == ("fp32", "fp32")
    assert cpu.audio_dtype == cpu.dtype == mx.float32
    leaves = dict(tree_flatten(cpu.net.leaf_modules(), is_leaf=nn.Module.is_module))
    stored = dict(tree_flatten(cpu.net.parameters()))
    for path, v in stored.items():
        matrix = path.endswith(".weight") and isinstance(leaves[path.rsplit(".", 1)[0]], (nn.Linear, nn.Embedding))
        assert v.dtype == (mx.bfloat16 if matrix else mx.float32), (path, v.dtype)
    enc = cpu.encode(feats)
    assert enc.dtype == mx.float32 and cpu.adapt(enc).dtype == mx.float32

    ref = funasr_nano.load(tiny_ckpt)  # float32, the same matrices rounded through bf16
    ref.net.load_weights([(p, v.astype(mx.bfloat16).astype(mx.float32)) for p, v in tree_flatten(ref.net.parameters())
                          if stored[p].dtype == mx.bfloat16], strict=False)
    np.testing.assert_allclose(np.array(enc), np.array(ref.encode(feats)), rtol=1e-5, atol=1e-5)
    emb = prompt_embeddings(ref, wav)
    toks, _ = ref.generate(emb, max_new_tokens=4, ignore_eos=True)
    assert cpu.generate(prompt_embeddings(cpu, wav), max_new_tokens=4, ignore_eos=True)[0] == toks
    np.testing.assert_allclose(np.array(teacher_forced_logits(cpu, prompt_embeddings(cpu, wav), toks)),
                               np.array(teacher_forced_logits(ref, emb, toks)), rtol=1e-4, atol=1e-4)

    # the GPUs' choice, or the override, computes in bf16 as stored (the name is then plain `bf16`)
    for pol in ("bf16_audio_compute=bf16,bf16_llm_compute=bf16", "metal", "cuda"):
        gpu = funasr_nano.load(tiny_ckpt, preset="bf16", policy=pol)
        assert gpu.preset == "bf16" and {v.dtype for _, v in tree_flatten(gpu.net.parameters())} == {mx.bfloat16}
    assert gpu.encode(feats).dtype == mx.bfloat16
    # one group each way
    assert funasr_nano.load(tiny_ckpt, preset="bf16", policy="bf16_llm_compute=bf16").preset == \
        "bf16-llm+bf16-audio@fp32"
    assert funasr_nano.load(tiny_ckpt, preset="bf16", policy="bf16_audio_compute=bf16").preset == \
        "bf16-llm@fp32+bf16-audio"
    # an explicit compute dtype wins over the policy; fp32 and quantized presets do not change
    assert funasr_nano.load(tiny_ckpt, preset="bf16@bf16").preset == "bf16"
    assert funasr_nano.load(tiny_ckpt, preset="q4-llm+bf16-audio").preset == "q4-llm+bf16-audio@fp32"
    assert funasr_nano.load(tiny_ckpt, preset="q4-g32").preset == "q4-g32"


def test_fsmn_conv_same_encoder(tiny_ckpt):
    """Both FSMN forms compute the same correlation; the policy sets the form on every layer and a
    policy switch changes it."""
    import mlx.core as mx
    import numpy as np

    from funasr_nano.synthetic.signals import speech_like

    shifted = funasr_nano.load(tiny_ckpt)
    conv = funasr_nano.load(tiny_ckpt, policy="fsmn_conv=yes")
    layers = conv.net.audio_encoder.layers()
    assert all(m.self_attn.fsmn_conv for m in layers) and "FSMN as conv1d" in conv.policy.summary()
    feats = shifted.features(speech_like(2.0, 1))
    a, b = np.array(shifted.encode(feats)), np.array(conv.encode(feats))
    assert np.abs(a).max() > 0.1
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    # padded batches (the time mask applies before and after the FSMN) agree too
    f2 = shifted.features(speech_like(1.2, 2))
    batch = np.zeros((2, feats.shape[0], feats.shape[1]), np.float32)
    batch[0], batch[1, : f2.shape[0]] = feats, f2
    lengths = [feats.shape[0], f2.shape[0]]
    np.testing.assert_allclose(np.array(conv.encode(batch, lengths)), np.array(shifted.encode(batch, lengths)),
                               rtol=1e-5, atol=1e-5)
    conv.policy = "fsmn_conv=no"
    assert not any(m.self_attn.fsmn_conv for m in layers)
    assert mx.array_equal(conv.encode(feats), shifted.encode(feats))


def test_policy_switch_reconfigures_layers(tiny_ckpt, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "dequant_min_rows=9")
    asr = funasr_nano.load(tiny_ckpt, preset="q8-g32")
    assert asr.policy.dequant_min_rows == 9 and asr.policy.overridden == ("dequant_min_rows",)
    assert all(m.dense_min_rows == 9 for m in _quantized(asr.net))
    asr.policy = "metal"  # Metal's defaults, with the environment's field still applied
    assert asr.policy.backend == "metal" and asr.policy.dequant_min_rows == 9
    asr.policy = "dequant_min_rows=never"
    assert all(m.dense_min_rows is None for m in _quantized(asr.net))
    asr.policy = "cuda,dequant_min_rows=16"
    assert all(m.dense_min_rows == 16 and not m.dense_chunked for m in _quantized(asr.net))


def test_metal_policy_decodes_like_cpu_policy_in_fp32(tiny_ckpt):
    """The Metal choices (MLX frontend, growing cache, no dense path) run here too, so a CPU
    machine can exercise them; in float32 they give the CPU policy's tokens."""
    from funasr_nano.synthetic.signals import speech_like

    wavs = [speech_like(1.5, 1), speech_like(2.0, 2)]
    cpu = funasr_nano.load(tiny_ckpt)
    metal = funasr_nano.load(tiny_ckpt, policy="metal")
    a = [r.tokens for r in cpu.transcribe_batch(wavs, max_new_tokens=6, ignore_eos=True)]
    b = [r.tokens for r in metal.transcribe_batch(wavs, max_new_tokens=6, ignore_eos=True)]
    assert a == b and all(len(t) == 6 for t in a)


def test_only_the_policy_module_asks_for_the_device():
    hits = []
    for p in (ROOT / "funasr_nano").rglob("*.py"):
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"default_device\(\)|==\s*mx\.gpu|\.type\s*[!=]=\s*mx\.(cpu|gpu)", line):
                hits.append(f"{p.relative_to(ROOT)}:{i}")
    assert hits and all(h.startswith("funasr_nano/runtime/backend.py:") for h in hits), hits


def test_recorded_in_asv_benchmark_and_machine_fingerprint(monkeypatch):
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import meta
    finally:
        sys.path.remove(str(ROOT))
    monkeypatch.setenv(ENV_VAR, "cuda,dequant_min_rows=8")
    bench = meta.Policy()
    values = {}
    for f in meta.Policy.params[0]:
        bench.setup(f)
        values[f] = bench.track_policy(f)
    assert values == {"dequant_min_rows": 8.0, "compiled_decode_rows": 0.0, "quant_compute_bits": 16.0,
                      "frontend_mlx": 1.0, "step_ops_fast": 1.0, "dequant_chunked": 0.0, "encoder_eval_every": 10.0,
                      "bf16_audio_compute_bits": 16.0, "bf16_llm_compute_bits": 16.0, "fsmn_conv": 1.0}
    # the fingerprint of a benchmark process (what runs.jsonl records) carries the policy too
    out = subprocess.run([sys.executable, "-m", "funasr_nano.bench.machine", "--no-write"], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    assert "policy   cuda: frontend mlx" in out.stdout and "dequantize >=8 rows" in out.stdout
    fp = json.loads(subprocess.run([sys.executable, "-m", "funasr_nano.bench.machine", "--json", "--no-write"],
                                   capture_output=True, text=True, check=True, cwd=ROOT).stdout)
    assert fp["details"]["policy"]["dequant_min_rows"] == 8 and fp["details"]["policy"]["overridden"] == [
        "dequant_min_rows"]


def test_profile_prints_the_policy(tiny_ckpt, tmp_path):
    import soundfile as sf

    from funasr_nano.synthetic.signals import speech_like

    wav = tmp_path / "a.wav"
    sf.write(wav, speech_like(1.0, 0), 16000)
    out = subprocess.run([sys.executable, "-m", "funasr_nano", "profile", str(wav), "--model", str(tiny_ckpt),
                          "--max-new-tokens", "3", "--json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    prof = json.loads(out.stdout)
    assert prof["policy"]["backend"] == "cpu" and set(FIELDS) <= set(prof["policy"])


def test_policy_dataclass_validates():
    with pytest.raises(PolicyError):
        BackendPolicy(backend="cpu", frontend="numpy", compiled_decode_rows=-1, step_ops="tables",
                      dequant_min_rows=4, dequant_chunked=True, quant_compute="fp32", reference_blas_check=True)
    assert parse_overrides(None) == (None, {})


def test_policy_ab_command(tiny_ckpt, tmp_path, capsys):
    from funasr_nano.bench.quick import main as bench_main

    out_json = tmp_path / "ab.json"
    rc = bench_main(["policy-ab", "--model", str(tiny_ckpt), "--repeats", "2", "--tokens", "3", "--batch", "2",
                     "--seconds", "1", "--json", str(out_json)])
    assert rc == 0
    table = capsys.readouterr().out
    res = json.loads(out_json.read_text())
    choices = [r["choice"] for r in res["rows"]]
    assert choices == ["quant_compute", "dequant_min_rows", "compiled_decode_rows", "step_ops", "frontend",
                       "encoder_eval_every", "bf16_audio_compute", "bf16_llm_compute", "fsmn_conv"]
    rows = {r["choice"]: r for r in res["rows"]}
    assert "bf16@fp32 vs bf16-llm@fp32+bf16-audio" in rows["bf16_audio_compute"]["workload"]
    assert "bf16@fp32 vs bf16-llm+bf16-audio@fp32" in rows["bf16_llm_compute"]["workload"]
    for r in res["rows"]:
        assert len(r["default_ms"]) == len(r["alternative_ms"]) == 2 and min(r["default_ms"] + r["alternative_ms"]) > 0
        assert r["default"] != r["alternative"]
        assert f"| {r['choice']} |" in table and r["verdict"] in table
    assert "TINY test model" in table and "cpu: frontend numpy" in table
    # a policy to start from and a choice subset; a bad choice is a usage error
    assert bench_main(["policy-ab", "--model", str(tiny_ckpt), "--repeats", "1", "--tokens", "2", "--batch", "2",
                       "--seconds", "1", "--policy", "metal", "--choice", "dequant_min_rows"]) == 0
    out = capsys.readouterr().out
    assert "| dequant_min_rows |" in out and "| never | >= 16 rows |" in out and "metal:" in out
    assert bench_main(["policy-ab", "--model", str(tiny_ckpt), "--choice", "warp_speed"]) == 2


def test_encoder_eval_every_changes_memory_not_numerics(tiny_ckpt):
    """Evaluating a batch's encoder in pieces gives bit-identical outputs (CPU)."""
    import mlx.core as mx
    import numpy as np

    from funasr_nano.model import frontend as fe
    from funasr_nano.synthetic.signals import speech_like

    asr = funasr_nano.load(tiny_ckpt)
    feats, lengths = fe.batch_features([speech_like(2.0, 1), speech_like(1.2, 2)], asr.cfg.frontend)
    outs = []
    for every in (0, 1, 2):
        asr.policy = f"encoder_eval_every={every}"
        outs.append(np.array(asr.encode(mx.array(feats), lengths)))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_report_footer_names_the_policy(tmp_path):
    from funasr_nano.bench.report import policy_note
    from funasr_nano.bench.results import load_results

    rs = load_results(tmp_path)  # no results: only the run records can say
    pol = resolve_policy("metal", environ={})
    runs = [{"commit": "abc", "policy": {**pol.to_dict(), "summary": pol.summary()}}]
    assert policy_note(rs, "m", "abc", runs) == f"Backend policy: {pol.summary()}."
    assert "not recorded" in policy_note(rs, "m", "abc", [{"commit": "abc"}])
