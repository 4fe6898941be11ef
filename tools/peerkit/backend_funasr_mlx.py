"""funasr-mlx (PyPI 0.2.3) as a row: its `LlmAsrTranscriber` for the fun-asr-nano family.

Its decode loop stops at EOS or ``max_tokens``; the stop set is the transcriber's ``_eos`` attribute,
which this row empties, so it decodes exactly N tokens with its own loop (greedy, 4 steps chained
per host round trip). Its prompt is its own, not the official one (system "You are a speech
recognition model.", user "语音转写：" with literal <|startofspeech|>/<|endofspeech|> around the
audio), so its tokens differ from the reference's from the first one on: compare its speed, not its
tokens. Stages: its ``_audio_embeds`` (frontend + encoder + adaptor, evaluated), then ``_decode``
(prefill, evaluated) and ``_greedy`` (the decode loop)."""

from __future__ import annotations

import time

from tools.peerkit.common import dist_version, mlx_for_peer, rss_high_water_bytes


class Runner:
    def __init__(self, form, precision, device, blas):
        self.mx, self.blas_status = mlx_for_peer(device, blas)
        from funasr_mlx.llm_asr import LlmAsrTranscriber

        self.t = LlmAsrTranscriber(form, family="fun-asr-nano")
        self.t._eos = ()
        self.precision, self.blas = precision, blas
        self.weight_bytes = int(self.mx.get_active_memory())
        self.marks: dict = {}
        orig_greedy = self.t._greedy

        def greedy(*a, **k):
            self.marks["greedy"] = time.perf_counter()
            return orig_greedy(*a, **k)

        self.t._greedy = greedy
        orig_step = self.t._step_ids

        def step(ids):  # the first decode step starts when the first token is known
            self.marks.setdefault("first_step", time.perf_counter())
            return orig_step(ids)

        self.t._step_ids = step

    def info(self) -> dict:
        mx = self.mx
        dev = mx.default_device()
        return {"impl": "funasr-mlx LlmAsrTranscriber", "runtime": f"MLX {mx.__version__}",
                "version": dist_version("funasr-mlx"), "mlx": mx.__version__,
                "backend": "cpu" if dev.type == mx.cpu else "gpu", "device": str(dev),
                "blas": (f"this project's OpenBLAS ({self.blas_status.get('mode')}: {self.blas_status.get('library')})"
                         if self.blas == "project" else "MLX's own (as shipped)"),
                "precision": self.precision, "weight_bytes": self.weight_bytes,
                "eos_short": "EOS ignored (stop set emptied)", "eos": "ignored (its stop set emptied)", "prompt": "its own (not the official prompt)",
                "peak_kind": "MLX peak memory"}

    def run(self, wav, tokens: int) -> dict:
        mx = self.mx
        self.t.max_tokens = tokens
        self.marks.clear()
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        embeds, fake_len = self.t._audio_embeds(wav)
        t_enc = time.perf_counter()
        text, ids = self.t._decode(embeds, fake_len)
        t_end = time.perf_counter()
        # _greedy evaluates the prefill's argmax before its first decode step
        first = self.marks.get("first_step", t_end)
        n_prompt = len(self.t._prefix) + int(fake_len) + len(self.t._tail)
        return {"e2e_s": t_end - t0, "encoder_s": t_enc - t0, "encoder_includes_frontend": True,
                "prefill_s": first - t_enc, "ms_per_token": 1000.0 * (t_end - first) / max(len(ids) - 1, 1),
                "token_ids": [int(x) for x in ids], "prompt_tokens": n_prompt, "text": text,
                "peak_bytes": int(mx.get_peak_memory()), "rss_hwm_bytes": rss_high_water_bytes()}


def load(form, precision, device, opts):
    return Runner(form, precision, device, opts.get("blas", "as-shipped"))
