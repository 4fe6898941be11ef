"""End-to-end speed: one call of ``transcribe`` (batch 1) or ``transcribe_batch`` (batch > 1) with
the pinned decode length, i.e. frontend -> encoder -> adaptor -> prompt -> prefill -> decode ->
detokenise. Scope: from the waveform in memory to the text; file decoding and resampling excluded
(as the Open ASR Leaderboard times it)."""

from . import common as c


class Transcribe(c.ModelBenchmark):
    """RTF = compute seconds / audio seconds over the batch (lower is better); RTFx = 1 / RTF is
    shown in reports only."""

    repeat = c.SENTINEL_REPEAT

    def setup(self, preset, batch, seconds):
        self.asr = c.load_model(preset)
        self.wavs = c.clips(seconds, batch)
        self.n = c.decode_tokens(seconds)
        self.warm_once((preset, batch, seconds), c.transcribe, self.asr, self.wavs, c.WARMUP_TOKENS)

    def time_transcribe(self, preset, batch, seconds):
        c.transcribe(self.asr, self.wavs, self.n)
        c.sync()

    def track_rtf(self, preset, batch, seconds):
        return c.median_time(c.transcribe, self.asr, self.wavs, self.n) / (batch * seconds)

    track_rtf.unit = "RTF (s/s)"
