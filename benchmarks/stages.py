"""Per-stage breakdown (whisper.cpp / mlx-examples style): frontend (fbank + LFR, numpy), SAN-M
encoder, adaptor, LLM prefill, one decode step. Each stage is timed alone on inputs prepared in
``setup`` from the grid's deterministic clips; every timed body ends with ``mx.eval``."""

from . import common as c


class _Stage(c.ModelBenchmark):
    repeat = (3, 10, 60.0)

    def prepare(self, preset, batch, seconds, upto):
        if getattr(self, "_prepared", None) == (preset, batch, seconds, upto):
            return  # asv re-runs setup before every sample: keep the prepared inputs
        self._prepared = None
        self._prepare(preset, batch, seconds, upto)
        self._prepared = (preset, batch, seconds, upto)

    def _prepare(self, preset, batch, seconds, upto):
        self.asr = c.load_model(preset)
        self.wavs = c.clips(seconds, batch)
        if upto == "frontend":
            return
        self.feats = c.features(self.asr, self.wavs)
        if upto == "encoder":
            return
        self.enc = c.encode(self.asr, self.feats)
        c.sync(self.enc)
        if upto == "adaptor":
            return
        self.embeds = c.prompt_embeds(self.asr, c.adapt(self.asr, self.enc))
        c.sync(self.embeds)


class Frontend(_Stage):
    def setup(self, preset, batch, seconds):
        self.prepare(preset, batch, seconds, "frontend")
        self.warm_once((preset, batch, seconds), c.features, self.asr, self.wavs)

    def time_frontend(self, preset, batch, seconds):
        c.features(self.asr, self.wavs)
        c.sync()


class Encoder(_Stage):
    def setup(self, preset, batch, seconds):
        self.prepare(preset, batch, seconds, "encoder")
        self.warm_once((preset, batch, seconds), lambda: c.sync(c.encode(self.asr, self.feats)))

    def time_encoder(self, preset, batch, seconds):
        c.sync(c.encode(self.asr, self.feats))


class Adaptor(_Stage):
    def setup(self, preset, batch, seconds):
        self.prepare(preset, batch, seconds, "adaptor")
        self.warm_once((preset, batch, seconds), lambda: c.sync(c.adapt(self.asr, self.enc)))

    def time_adaptor(self, preset, batch, seconds):
        c.sync(c.adapt(self.asr, self.enc))


class Prefill(_Stage):
    def setup(self, preset, batch, seconds):
        self.prepare(preset, batch, seconds, "prefill")
        self.warm_once((preset, batch, seconds), self.time_prefill, preset, batch, seconds)

    def time_prefill(self, preset, batch, seconds):
        c.sync(self.asr.prefill(self.embeds, self.asr.new_cache()))


class DecodeStep(_Stage):
    """One decode step (B new tokens) on top of the prefilled prompt; the KV cache grows by one
    position per sample, which is negligible next to the prompt length."""

    def setup(self, preset, batch, seconds):
        if getattr(self, "_key", None) == (preset, batch, seconds):
            return  # asv re-runs setup before each sample: keep the prefilled cache
        self.prepare(preset, batch, seconds, "prefill")
        self.cache = self.asr.new_cache()
        logits = self.asr.prefill(self.embeds, self.cache)
        self.token = c.mx().argmax(logits, axis=-1)
        c.sync(self.token)
        self._key = (preset, batch, seconds)
        self.warm_once((preset, batch, seconds), self.time_decode_step, preset, batch, seconds)

    def time_decode_step(self, preset, batch, seconds):
        c.sync(self.asr.decode_step(self.token, self.cache))
