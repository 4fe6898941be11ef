"""Transformers' own implementation as a row: `FunAsrNanoForConditionalGeneration` + `FunAsrNanoProcessor`.

Loads the ``hf`` form (tools/peerkit/forms.py). The prompt is the official one for no language and
ITN on (system "You are a helpful assistant.", user "语音转写：" + the audio placeholders), written
out here rather than through a chat template, because the form carries none of its own; the processor
expands the placeholder to its audio-token count. Precisions: ``fp32`` / ``bf16`` (model dtype) with
``attn=sdpa`` (transformers' default) or ``attn=eager`` (option). EOS: ``generate(min_new_tokens=N)``
masks EOS until N tokens."""

from __future__ import annotations

import time

from tools.peerkit.common import TokenClock, dist_version, rss_high_water_bytes, torch_sync, wrap_forward

PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n语音转写："
          "{audio}<|im_end|>\n<|im_start|>assistant\n")


class Runner:
    def __init__(self, form, precision, device, attn):
        import torch
        from transformers import FunAsrNanoForConditionalGeneration, FunAsrNanoProcessor

        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in dtypes:
            raise ValueError(f"transformers precision {precision!r}: choose {sorted(dtypes)}")
        self.torch, self.device, self.precision, self.attn = torch, device, precision, attn
        self.proc = FunAsrNanoProcessor.from_pretrained(form)
        self.model = FunAsrNanoForConditionalGeneration.from_pretrained(
            form, dtype=dtypes[precision], attn_implementation=attn).to(device).eval()
        self.stage: dict = {}
        wrap_forward(self.model.model.audio_tower, device, self.stage)
        wrap_forward(self.model.model.multi_modal_projector, device, self.stage)

    def info(self) -> dict:
        torch = self.torch
        cuda = self.device.startswith("cuda")
        return {"impl": "transformers FunAsrNanoForConditionalGeneration", "runtime": f"torch {torch.__version__}",
                "version": dist_version("transformers"), "torch": torch.__version__,
                "torchaudio": dist_version("torchaudio"), "backend": "cuda" if cuda else "cpu",
                "device": torch.cuda.get_device_name(0) if cuda else "cpu", "threads": torch.get_num_threads(),
                "precision": f"{self.precision} ({self.attn} attention)", "attn": self.model.config._attn_implementation,
                "eos_short": "EOS masked (min_new_tokens)", "eos": "masked until N tokens (generate min_new_tokens=N)",
                "peak_kind": "torch.cuda.max_memory_allocated" if cuda else "process RSS high-water"}

    def run(self, wav, tokens: int) -> dict:
        torch = self.torch
        clock = TokenClock()
        self.stage["encoder"] = 0.0
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            torch_sync(self.device)
            t0 = time.perf_counter()
            inputs = self.proc(text=PROMPT.format(audio=self.proc.audio_token), audio=[wav], sampling_rate=16000)
            inputs = inputs.to(self.device)
            if "input_features" in inputs:
                inputs["input_features"] = inputs["input_features"].to(self.model.dtype)
            out = self.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                      streamer=clock)
            torch_sync(self.device)
            n_prompt = int(inputs["input_ids"].shape[1])
            ids = [int(t) for t in out[0, n_prompt:].tolist()]
            text = self.proc.tokenizer.decode(ids, skip_special_tokens=True)
            e2e = time.perf_counter() - t0
        prefill, decode, steps = clock.split()
        peak = torch.cuda.max_memory_allocated() if self.device.startswith("cuda") else rss_high_water_bytes()
        n_audio = int((inputs["input_ids"][0] == self.proc.audio_token_id).sum())
        return {"e2e_s": e2e, "encoder_s": self.stage["encoder"], "prefill_s": prefill,
                "ms_per_token": 1000.0 * decode / steps if steps else float("nan"), "token_ids": ids,
                "prompt_tokens": n_prompt, "audio_tokens": n_audio, "text": text, "peak_bytes": int(peak),
                "rss_hwm_bytes": rss_high_water_bytes()}


def load(form, precision, device, opts):
    return Runner(form, precision, device, opts.get("attn", "sdpa"))
