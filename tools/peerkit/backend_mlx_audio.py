"""mlx-audio's fun_asr_nano as a row (its float and quantized mlx-community forms).

Its ``generate`` stops at EOS and has no option not to, so the row runs the same steps ``generate``
runs, through mlx-audio's own functions: ``model._build_inputs_embeds`` (its frontend, encoder,
adaptor and official prompt) and ``mlx_audio.lm.generate.generate_step`` (its decode loop, greedy
sampler), taking exactly N tokens and not breaking at EOS. Encoder+adaptor time: the two modules'
calls, each followed by ``mx.eval`` of its output (one extra synchronization point that ``generate``
does not have)."""

from __future__ import annotations

import time

from tools.peerkit.common import dist_version, mlx_for_peer, rss_high_water_bytes


class Runner:
    def __init__(self, form, precision, device, blas):
        self.mx, self.blas_status = mlx_for_peer(device, blas)
        from mlx_audio.stt import load

        self.model = load(str(form))
        self.precision, self.blas = precision, blas
        self.weight_bytes = int(self.mx.get_active_memory())
        self.stage = {"encoder": 0.0}
        for name in ("audio_encoder", "audio_adaptor"):
            self._wrap(name)

    def _wrap(self, name):
        mx, mod, stage = self.mx, getattr(self.model, name), self.stage
        orig = mod.__call__

        class Timed(type(mod)):
            def __call__(self, *a, **k):
                t = time.perf_counter()
                out = orig(*a, **k)
                mx.eval(out)
                stage["encoder"] += time.perf_counter() - t
                return out

        mod.__class__ = Timed

    def info(self) -> dict:
        mx = self.mx
        dev = mx.default_device()
        return {"impl": "mlx-audio fun_asr_nano", "runtime": f"MLX {mx.__version__}", "version": dist_version("mlx-audio"),
                "mlx": mx.__version__, "backend": "cpu" if dev.type == mx.cpu else "gpu", "device": str(dev),
                "blas": (f"this project's OpenBLAS ({self.blas_status.get('mode')}: {self.blas_status.get('library')})"
                         if self.blas == "project" else "MLX's own (as shipped)"),
                "precision": self.precision, "weight_bytes": self.weight_bytes,
                "eos_short": "EOS not stopped (its generate_step, N steps)", "eos": "not stopped: its generate_step driven for N tokens (generate() itself stops at EOS)",
                "peak_kind": "MLX peak memory"}

    def run(self, wav, tokens: int) -> dict:
        from mlx_audio.lm.generate import generate_step

        mx = self.mx
        mx.reset_peak_memory()
        self.stage["encoder"] = 0.0
        t0 = time.perf_counter()
        input_ids, embeds = self.model._build_inputs_embeds(wav, language=None, hotwords=None, itn=True)
        t_prompt = time.perf_counter()
        ids, t_first = [], None
        for tok, _ in generate_step(prompt=input_ids[0], input_embeddings=embeds[0], model=self.model,
                                    max_tokens=tokens):
            ids.append(int(tok))
            if t_first is None:
                t_first = time.perf_counter()
            if len(ids) >= tokens:
                break
        t_end = time.perf_counter()
        text = self.model._tokenizer.decode(ids, skip_special_tokens=True)
        e2e = time.perf_counter() - t0
        return {"e2e_s": e2e, "encoder_s": self.stage["encoder"], "prefill_s": t_first - t_prompt,
                "ms_per_token": 1000.0 * (t_end - t_first) / max(len(ids) - 1, 1), "token_ids": ids,
                "prompt_tokens": int(input_ids.shape[1]), "text": text, "peak_bytes": int(mx.get_peak_memory()),
                "rss_hwm_bytes": rss_high_water_bytes()}


def load(form, precision, device, opts):
    return Runner(form, precision, device, opts.get("blas", "as-shipped"))
