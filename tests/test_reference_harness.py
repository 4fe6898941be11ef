"""Self-checks of the PyTorch reference harness on the tiny preset (fast: well under a minute)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.support.optional import need

torch = need("torch")
need("funasr")

from tests.support import reference_harness as rh  # noqa: E402

from funasr_nano.synthetic.signals import SAMPLE_RATE, _make_standard_clips, check_amplitude, noise, speech_like, standard_clips

N_STEPS = 6
FLT_EPS_LOG = float(np.log(np.float32(1.1920929e-07)))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The tiny model's matmuls are far too small to gain from threads, and on a shared 2-core
    # box OpenMP thread oversubscription makes them much slower. Restored afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return rh.build_reference_checkpoint(tmp_path_factory.mktemp("ref_tiny"), preset="tiny", seed=0)


@pytest.fixture(scope="module")
def ref(ckpt):
    return rh.load_reference_model(ckpt)


@pytest.fixture(scope="module")
def clips():
    return standard_clips()


def _run(ref, audio, **kw):
    model, tok, fe = ref
    kw.setdefault("n_steps", N_STEPS)
    return rh.run_reference(model, tok, fe, audio, **kw)


# --------------------------------------------------------------------------- test audio


def test_standard_clips_deterministic_and_unclipped(clips):
    again = _make_standard_clips()  # regenerate from scratch (standard_clips() is cached)
    assert list(clips) == list(again)
    for name in ("short_0p6s", "speech_3s", "speech_30s", "silence_2s", "tone_noise_5s"):
        assert name in clips
    for name, x in clips.items():
        check_amplitude(x, name=name)
        assert x.dtype == np.float32 and x.ndim == 1
        assert np.array_equal(x, again[name]), name
    assert clips["short_0p6s"].size < SAMPLE_RATE
    assert abs(clips["speech_30s"].size / SAMPLE_RATE - 30.0) < 0.5
    assert not np.any(clips["silence_2s"])
    assert not np.array_equal(speech_like(1.0, seed=1), speech_like(1.0, seed=2))
    with pytest.raises(ValueError):
        check_amplitude(np.array([0.0, 1.0], dtype=np.float32))
    assert np.max(np.abs(noise(1.0, seed=0, amplitude=0.2))) <= 0.2


# --------------------------------------------------------------------------- checkpoint


def test_checkpoint_layout(ckpt):
    assert (ckpt / "config.yaml").is_file()
    assert (ckpt / "Qwen3-0.6B" / "config.json").is_file()
    assert (ckpt / "Qwen3-0.6B" / "tokenizer.json").is_file()
    sd = torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True)
    assert list(sd) == ["state_dict"]
    sd = sd["state_dict"]
    counts = {p: sum(k.startswith(p + ".") for k in sd) for p in ("audio_encoder", "audio_adaptor", "llm")}
    # tiny: encoder 5 SAN-M layers x 13 + 2 norms x 2; adaptor 4 + 2 x 16; llm 1 + 2 x 11 + norm + lm_head
    assert counts == {"audio_encoder": 69, "audio_adaptor": 36, "llm": 25}
    assert sum(counts.values()) == len(sd)
    assert all(v.dtype == torch.bfloat16 for v in sd.values())
    assert not any(k.startswith(("ctc.", "ctc_decoder.")) for k in sd)
    assert torch.equal(sd["llm.lm_head.weight"], sd["llm.model.embed_tokens.weight"])
    assert sd["llm.lm_head.weight"].data_ptr() != sd["llm.model.embed_tokens.weight"].data_ptr()
    # init statistics as specified
    ln = sd["audio_encoder.after_norm.weight"].float()
    assert abs(ln.mean().item() - 1.0) < 0.05 and 0.02 < ln.std().item() < 0.09
    w = sd["audio_encoder.encoders.0.self_attn.linear_q_k_v.weight"].float()
    assert abs(w.std().item() - 0.02) < 0.003
    f = sd["audio_encoder.encoders.0.self_attn.fsmn_block.weight"].float()
    assert abs(f.std().item() - 0.05) < 0.01
    rms = sd["llm.model.layers.0.input_layernorm.weight"].float()
    assert abs(rms.mean().item() - 1.0) < 0.05


def test_build_is_deterministic(ckpt, tmp_path):
    other = rh.build_reference_checkpoint(tmp_path / "again", preset="tiny", seed=0)
    a = torch.load(ckpt / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(other / "model.pt", weights_only=True)["state_dict"]
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_loaded_params_are_fp32_bf16_values(ckpt, ref):
    model = ref[0]
    sd = torch.load(ckpt / "model.pt", weights_only=True)["state_dict"]
    msd = model.state_dict()
    assert set(msd) == set(sd)
    for k, v in sd.items():
        assert msd[k].dtype == torch.float32, k
        assert torch.equal(msd[k], v.float()), k
    assert not model.training


# --------------------------------------------------------------------------- records


def test_load_twice_identical(ckpt, ref, clips):
    a = _run(ref, clips["speech_3s"])
    # second load also without the construction-time init shortcut: must not matter
    b = _run(rh.load_reference_model(ckpt, fast_init=False), clips["speech_3s"])
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("n", [400, 401, 559, 560, 9600, 16000, 16001, 48000])
def test_frame_counts(ref, n):
    x = speech_like(n / SAMPLE_RATE, seed=7)
    assert x.size == n
    r = _run(ref, x, n_steps=2)
    T = 1 + (n - 400) // 160
    T_lfr = math.ceil(T / 6)
    L_a = math.ceil(T_lfr / 8)
    assert r["fbank"].shape == (T, 80)
    assert r["lfr"].shape == (T_lfr, 560)
    d_enc = ref[0].audio_encoder.output_size()
    d_llm = ref[0].llm.get_input_embeddings().weight.shape[1]
    assert r["encoder_out"].shape == (T_lfr, d_enc)
    assert r["adaptor_out"].shape == (T_lfr, d_llm)
    assert int(r["fake_token_len"]) == L_a
    beg = int(r["fbank_beg"])
    S = r["prompt_ids"].shape[0]
    assert S == beg + L_a + 5
    assert np.all(r["prompt_ids"][beg:beg + L_a] == 0)
    assert r["inputs_embeds"].shape == (S, d_llm)
    assert np.array_equal(r["inputs_embeds"][beg:beg + L_a], r["adaptor_out"][:L_a])
    emb = ref[0].llm.get_input_embeddings().weight.detach().numpy()
    text_rows = np.r_[0:beg, beg + L_a:S]
    assert np.array_equal(r["inputs_embeds"][text_rows], emb[r["prompt_ids"][text_rows]])
    # LFR layout: frame i = P[6i..6i+6] with P = 3 copies of frame 0 + frames + last-frame padding
    fb = r["fbank"]
    P = np.concatenate([fb[:1]] * 3 + [fb] + [fb[-1:]] * 7)
    expect = np.stack([P[6 * i:6 * i + 7].reshape(-1) for i in range(T_lfr)])
    assert np.array_equal(r["lfr"], expect)


def test_fbank_backend_dither_and_scaling(ref, clips):
    r = _run(ref, clips["silence_2s"], n_steps=1)
    assert str(r["fbank_backend"]) in ("kaldi-native-fbank", "torchaudio")
    assert float(r["fbank_dither"]) == 0.0
    # all-zero input with dither 0: every bin sits exactly on the log floor
    assert np.allclose(r["fbank"], FLT_EPS_LOG, atol=1e-6)
    # x32768 happens inside funasr: compare with kaldi-native-fbank fed the scaled waveform
    knf = need("kaldi_native_fbank")
    x = clips["tone_noise_5s"][:16000]
    r = _run(ref, x, n_steps=1)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hamming"
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 80
    opts.energy_floor = 0.0
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, (x * 32768.0).astype(np.float32))
    fb.input_finished()
    direct = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
    assert direct.shape == r["fbank"].shape
    np.testing.assert_allclose(r["fbank"], direct, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["short_0p6s", "speech_3s", "tone_noise_5s"])
def test_stepwise_greedy_equals_generate(ref, clips, name):
    r = _run(ref, clips[name], n_steps=N_STEPS)
    assert r["step_logits"].shape == (N_STEPS, 151936)
    assert r["step_logits"].dtype == np.float32
    assert np.array_equal(r["greedy_tokens"], r["step_logits"].argmax(-1))
    assert np.all(r["top2_margin"] >= 0)
    assert bool(r["greedy_matches_generate"])
    n = int(r["generate_len"])
    assert np.array_equal(r["generate_tokens"][:n], r["greedy_tokens"][:n])


def test_generate_eos_stop_is_handled(ref, clips):
    # The random tiny LLM (tied embeddings) mostly repeats its last input token. Ending the
    # forced assistant prefix with <|im_end|> therefore makes the reference generate stop at
    # once on EOS, exercising the "equal up to EOS" comparison.
    r = _run(ref, clips["speech_3s"], n_steps=N_STEPS, prev_text="<|im_end|>")
    n = int(r["generate_len"])
    assert n < N_STEPS
    assert int(r["generate_tokens"][n - 1]) in rh.EOS_IDS
    assert bool(r["greedy_matches_generate"])
    assert str(r["reference_text"]).startswith("<|im_end|>")  # prev_text is prepended verbatim


# --------------------------------------------------------------------------- prompt


def test_prompt_variants(ref, clips):
    tok = ref[1]
    x = clips["short_0p6s"]
    base = _run(ref, x, n_steps=1)
    variants = {
        "lang": dict(language="英文"),
        "noitn": dict(itn=False),
        "lang_noitn": dict(language="英文", itn=False),
        "hot": dict(hotwords=["开放时间", "阿里巴巴"]),
        "prev": dict(prev_text="The"),
    }
    recs = {k: _run(ref, x, n_steps=1, **kw) for k, kw in variants.items()}

    def prefix(r):
        return tok.decode(r["prompt_ids"][: int(r["fbank_beg"])].tolist())

    def suffix(r):
        return tok.decode(r["prompt_ids"][int(r["fbank_beg"]) + int(r["fake_token_len"]):].tolist())

    sys_user = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    assert prefix(base) == sys_user + "语音转写："
    assert int(base["fbank_beg"]) == 18  # 14 system/user tokens + 4 for 语音转写：
    assert suffix(base) == "<|im_end|>\n<|im_start|>assistant\n"
    assert str(base["user_prompt"]) == "语音转写："
    assert prefix(recs["lang"]).endswith("语音转写成英文：")
    assert prefix(recs["noitn"]).endswith("语音转写，不进行文本规整：")
    assert prefix(recs["lang_noitn"]).endswith("语音转写成英文，不进行文本规整：")
    hp = prefix(recs["hot"])
    assert hp.startswith(sys_user + "请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。\n\n\n**上下文信息：**\n\n\n")
    assert hp.endswith("热词列表：[开放时间, 阿里巴巴]\n语音转写：")
    assert suffix(recs["prev"]) == "<|im_end|>\n<|im_start|>assistant\nThe"
    assert str(recs["prev"]["reference_text"]).startswith("The")
    for k, r in recs.items():
        assert not np.array_equal(r["prompt_ids"], base["prompt_ids"]), k
        # audio path is independent of the prompt
        assert np.array_equal(r["encoder_out"], base["encoder_out"]), k
        assert np.array_equal(r["adaptor_out"], base["adaptor_out"]), k
        L = int(r["fake_token_len"])
        b = int(r["fbank_beg"])
        assert np.array_equal(r["inputs_embeds"][b:b + L], base["adaptor_out"][:L]), k
    assert "<|AUDIO|x" in str(base["prompt_text"])


# --------------------------------------------------------------------------- cache


def test_reference_npz_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNASR_NANO_REF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rh, "_MODEL_CACHE", {})
    a = rh.reference_npz("tiny", 0, "short_0p6s", n_steps=3)
    files = sorted((tmp_path / "cache" / "records").glob("*.npz"))
    assert len(files) == 1 and files[0].with_suffix(".json").is_file()
    assert (rh.reference_checkpoint("tiny", 0) / ".complete").is_file()

    def boom(*a, **k):
        raise AssertionError("cache miss: run_reference called again")

    monkeypatch.setattr(rh, "run_reference", boom)
    b = rh.reference_npz("tiny", 0, "short_0p6s", n_steps=3)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert str(b["reference_text"]) == str(a["reference_text"])
    with pytest.raises(AssertionError, match="cache miss"):
        rh.reference_npz("tiny", 0, "short_0p6s", n_steps=3, language="英文")
