"""This project (funasr_nano, MLX) as a row: the public `load` + `transcribe(ignore_eos=True)`."""

from __future__ import annotations

import time

from tools.peerkit.common import dist_version, rss_high_water_bytes


class Runner:
    def __init__(self, ckpt, preset, device):
        import funasr_nano  # before mlx.core: gives MLX's Linux CPU backend OpenBLAS (funasr_nano/runtime/blas.py)
        import mlx.core as mx

        self.mx = mx
        mx.set_default_device(mx.cpu if device == "cpu" else mx.gpu)
        self.asr = funasr_nano.load(ckpt, preset=preset)
        self.preset = preset
        self.weight_bytes = int(mx.get_active_memory())

    @staticmethod
    def version() -> str:
        """The installed distribution's version, or the package's own where it runs from a source tree
        on PYTHONPATH (the lent GPU machine), which pip metadata does not know about."""
        import funasr_nano

        v = dist_version("funasr-nano-mlx")
        return v if v != "absent" else f"{funasr_nano.__version__} (source tree)"

    def info(self) -> dict:
        from funasr_nano.runtime.platform_info import backend_info

        mx = self.mx
        b = backend_info()
        return {"impl": "funasr_nano (this project)", "runtime": f"MLX {mx.__version__}",
                "version": self.version(), "mlx": mx.__version__,
                "backend": b.get("backend"), "device": b.get("device_name") or b.get("device"),
                "blas": b.get("blas"), "precision": self.preset, "weight_bytes": self.weight_bytes,
                "eos_short": "EOS ignored (argmax kept)", "eos": "ignored: transcribe(ignore_eos=True) keeps the argmax and decodes on (the PyTorch rows mask "
                       "EOS instead, so a step whose argmax is EOS differs by construction)", "peak_kind": "MLX peak memory"}

    def run(self, wav, tokens: int) -> dict:
        mx = self.mx
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        r = self.asr.transcribe(wav, max_new_tokens=tokens, ignore_eos=True)
        e2e = time.perf_counter() - t0
        t = r.timings
        return {"e2e_s": e2e, "encoder_s": t.get("encoder", 0.0) + t.get("adaptor", 0.0),
                "prefill_s": t.get("prefill"), "ms_per_token": r.ms_per_token,
                "token_ids": [int(x) for x in r.tokens], "prompt_tokens": int(r.prompt_tokens),
                "audio_tokens": int(r.n_audio_tokens), "text": r.text,
                "peak_bytes": int(mx.get_peak_memory()), "rss_hwm_bytes": rss_high_water_bytes()}


def load(form, precision, device, opts):
    return Runner(form, precision, device)
