"""Official funasr (PyTorch) as a row: `FunASRNano.inference`, built as AutoModel builds it.

The model is built by tests/reference_harness.py (funasr's own registry, config.yaml, loader; dither
0). Precisions: fp32 (funasr's default), tf32 (fp32 with TF32 matmuls, CUDA only: the like-for-like
row for MLX's CUDA float32 GEMMs) and bf16 (funasr's own ``llm_dtype="bf16"`` path: LLM cast to
bfloat16 under autocast, audio encoder float32). EOS: HF ``generate(min_new_tokens=N)`` masks the
EOS logits until N tokens, so a row never stops early (where the argmax would be EOS, it takes the
best other token)."""

from __future__ import annotations

import time

from tools.peerkit.common import TokenClock, dist_version, rss_high_water_bytes, torch_sync, wrap_forward


class Runner:
    def __init__(self, ckpt, precision, device):
        import torch

        from tests.support.reference_harness import inference_kwargs, fbank_backend, load_reference_model

        if precision not in ("fp32", "tf32", "bf16"):
            raise ValueError(f"funasr precision {precision!r}: choose fp32, tf32 or bf16")
        if precision == "tf32" and not device.startswith("cuda"):
            raise ValueError("tf32 is a CUDA matmul mode; this row needs --device cuda")
        self.torch, self.device, self.precision = torch, device, precision
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        self.model, self.tok, self.fe = load_reference_model(ckpt)
        self.model.to(device)
        self.fbank = fbank_backend()
        self._kwargs = inference_kwargs
        self.stage: dict = {}
        wrap_forward(self.model.audio_encoder, device, self.stage)
        wrap_forward(self.model.audio_adaptor, device, self.stage)

    def info(self) -> dict:
        torch = self.torch
        cuda = self.device.startswith("cuda")
        return {"impl": "funasr (official, PyTorch)", "runtime": f"torch {torch.__version__}",
                "version": dist_version("funasr"), "torch": torch.__version__, "transformers": dist_version("transformers"),
                "backend": "cuda" if cuda else "cpu", "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                "threads": torch.get_num_threads(), "fbank": self.fbank, "precision": self.precision,
                "eos_short": "EOS masked (min_new_tokens)", "eos": "masked until N tokens (generate min_new_tokens=N)",
                "peak_kind": "torch.cuda.max_memory_allocated" if cuda else "process RSS high-water"}

    def run(self, wav, tokens: int) -> dict:
        torch = self.torch
        kw = self._kwargs(self.model, None, None, True, tokens, "")
        kw["device"] = self.device
        kw["llm_dtype"] = "bf16" if self.precision == "bf16" else "fp32"
        clock = TokenClock()
        kw["llm_kwargs"] = {"min_new_tokens": tokens, "streamer": clock}
        captured = {}
        orig_gen = self.model.llm.generate

        def gen(*a, **k):
            captured["prompt_len"] = int(k["inputs_embeds"].shape[1])
            out = orig_gen(*a, **k)
            captured["ids"] = out
            return out

        self.model.llm.generate = gen
        self.stage["encoder"] = 0.0
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        audio = torch.from_numpy(wav.copy())
        try:
            with torch.no_grad():
                torch_sync(self.device)
                t0 = time.perf_counter()
                res, _ = self.model.inference([audio], key=["x"], tokenizer=self.tok, frontend=self.fe, **kw)
                torch_sync(self.device)
                e2e = time.perf_counter() - t0
        finally:
            self.model.llm.generate = orig_gen
        prefill, decode, steps = clock.split()
        ids = [int(t) for t in captured["ids"][0].tolist()]
        peak = torch.cuda.max_memory_allocated() if self.device.startswith("cuda") else rss_high_water_bytes()
        return {"e2e_s": e2e, "encoder_s": self.stage["encoder"], "prefill_s": prefill,
                "ms_per_token": 1000.0 * decode / steps if steps else float("nan"),
                "token_ids": ids, "prompt_tokens": captured["prompt_len"], "text": res[0].get("text", ""),
                "peak_bytes": int(peak), "rss_hwm_bytes": rss_high_water_bytes()}


def load(form, precision, device, opts):
    return Runner(form, precision, device)
