"""Accuracy: corpus WER / CER through ``funasr_nano.evaluation.evaluate`` (needs the ``eval`` extra).

Defaults are the smoke sets shipped with the repo (``datasets_cfg/smoke.yaml``: English, WER;
``datasets_cfg/smoke-zh.yaml``: Mandarin, CER), so the numbers exist offline on every machine.
With synthetic weights error rates are meaningless (random weights never stop and output noise),
so the benchmarks skip unless ``FUNASR_NANO_BENCH_ACCURACY_SYNTHETIC=1``. The sets can be swapped
with ``FUNASR_NANO_BENCH_WER_SET`` / ``FUNASR_NANO_BENCH_CER_SET`` (a different set is a different
series: record such runs under their own machine name or results directory).
"""

import os

from . import common as c

_RESULTS: dict = {}


class Accuracy(c.ModelBenchmark):
    params = [c.PRESETS]
    param_names = ["preset"]
    repeat = 1
    timeout = 7200

    def setup(self, preset):
        if c.uses_synthetic_weights() and os.environ.get("FUNASR_NANO_BENCH_ACCURACY_SYNTHETIC", "") in ("", "0"):
            raise NotImplementedError("synthetic weights: WER/CER would be meaningless")
        try:
            from funasr_nano.evaluation import evaluate
        except ImportError as e:
            raise NotImplementedError(f"evaluation unavailable: {e}")
        self.evaluate = evaluate
        self.asr = c.load_model(preset)

    def _run(self, preset, name):
        key = (preset, name)
        if key not in _RESULTS:
            try:
                _RESULTS[key] = self.evaluate(self.asr, name, limit=None, progress=False)
            except ImportError as e:  # the eval extra (datasets, jiwer) is not installed
                raise NotImplementedError(f"evaluation dependencies missing: {e}")
        return _RESULTS[key]

    def track_wer(self, preset):
        r = self._run(preset, os.environ.get("FUNASR_NANO_BENCH_WER_SET", "smoke"))
        return float(r["wer"] if isinstance(r, dict) else r.wer)

    track_wer.unit = "WER (fraction)"

    def track_cer(self, preset):
        r = self._run(preset, os.environ.get("FUNASR_NANO_BENCH_CER_SET", "smoke-zh"))
        return float(r["cer"] if isinstance(r, dict) else r.cer)

    track_cer.unit = "CER (fraction)"
