"""Fidelity of each precision preset to the fp32 reference, teacher-forced (so one early divergence
does not decide everything, and synthetic weights give meaningful numbers too): both models read
the same clip and the same reference token sequence (the fp32 model's greedy tokens, pinned
length), and each position's next-token distribution is compared
(``funasr_nano.bench.fidelity.teacher_forced_fidelity``).

* ``track_top1_disagreement`` = 1 - top-1 agreement (fraction of positions whose argmax differs).
* ``track_mean_kl`` = mean KL(fp32 || preset) over positions, in nats.

Both are lower-is-better; ``fp32`` against itself is the 0 sanity point.
"""

from . import common as c

_RESULTS: dict = {}


class Fidelity(c.ModelBenchmark):
    params = [c.PRESETS, c.AUDIO_SECONDS]
    param_names = ["preset", "seconds"]
    repeat = 1

    def setup(self, preset, seconds):
        try:
            teacher_forced_fidelity = c.first_of("funasr_nano.bench.fidelity:teacher_forced_fidelity",
                                                 "funasr_nano.fidelity:teacher_forced_fidelity")
        except ImportError as e:
            raise NotImplementedError(f"no funasr_nano.fidelity in this version: {e}")
        key = (preset, seconds)
        if key not in _RESULTS:
            ref = c.load_model(c.REFERENCE_PRESET)
            cand = ref if preset == c.REFERENCE_PRESET else c.load_model(preset)
            _RESULTS[key] = dict(teacher_forced_fidelity(ref, cand, c.clips(seconds, 1)[0],
                                                         c.decode_tokens(seconds)))
        self.res = _RESULTS[key]

    def track_top1_disagreement(self, preset, seconds):
        return 1.0 - float(self.res["top1_agreement"])

    track_top1_disagreement.unit = "fraction"

    def track_mean_kl(self, preset, seconds):
        return float(self.res["mean_kl"])

    track_mean_kl.unit = "nats"
