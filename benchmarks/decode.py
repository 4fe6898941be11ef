"""Prefill and decode rates of the LLM part, the two numbers LLM runtimes publish (mlx-lm,
llama-bench): prefill cost per prompt token and the marginal cost of one decoded token.

* ``Prefill.track_ms_per_prompt_token``: one prefill of the [B, S, D] prompt embeddings (including
  the logits of the last row) divided by the B x S prompt tokens.
* ``Decode.track_ms_per_token``: the package's greedy loop (``asr.generate``, EOS ignored) run for the
  pinned N tokens and for 1 token; (t_N - t_1) / (N - 1) is the wall time of one decode step (one
  new token per row, so tokens/s = B x 1000 / ms_per_token). No instrumentation of the package is
  trusted: both ends are timed outside it.
* ``Decode.time_generate``: prefill + N tokens as an asv-native timing (samples and statistics for
  ``asv compare``).
"""

from . import common as c


class Prefill(c.ModelBenchmark):
    def setup(self, preset, batch, seconds):
        self.asr = c.load_model(preset)
        self.embeds, self.prompt_len = c.embeds_for(self.asr, seconds, batch)
        self.warm_once((preset, batch, seconds), self._prefill)

    def _prefill(self):
        c.sync(self.asr.prefill(self.embeds, self.asr.new_cache()))

    def track_ms_per_prompt_token(self, preset, batch, seconds):
        return 1000.0 * c.median_time(self._prefill) / (batch * self.prompt_len)

    track_ms_per_prompt_token.unit = "ms/prompt token"


class Decode(c.ModelBenchmark):
    repeat = c.SENTINEL_REPEAT

    def setup(self, preset, batch, seconds):
        self.asr = c.load_model(preset)
        self.embeds, _ = c.embeds_for(self.asr, seconds, batch)
        self.n = c.decode_tokens(seconds)
        self.warm_once((preset, batch, seconds), c.generate, self.asr, self.embeds, c.WARMUP_TOKENS)

    def time_generate(self, preset, batch, seconds):
        c.generate(self.asr, self.embeds, self.n)
        c.sync()

    def track_ms_per_token(self, preset, batch, seconds):
        t1 = c.median_time(c.generate, self.asr, self.embeds, 1)
        tn = c.median_time(c.generate, self.asr, self.embeds, self.n)
        return 1000.0 * (tn - t1) / (self.n - 1)

    track_ms_per_token.unit = "ms/token"
