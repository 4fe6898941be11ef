"""Memory. Two kinds, reported separately:

* MLX memory (``mx.get_peak_memory``, all backends incl. Metal/CUDA): ``track_peak_bytes`` is the
  peak of MLX-allocated memory during one end-to-end transcription, *including the weights*
  (mlx-lm's "peak memory" definition): the allocator cache is cleared and the peak reset after
  the model is loaded and warmed, then one pinned-length transcription runs.
  ``Weights.track_weight_bytes`` is the bytes of the loaded parameters (quantized sizes included).
* Host RSS (asv ``peakmem_``, process max RSS): includes the interpreter, imports and loading, so
  ``peakmem_transcribe`` sits next to ``HostBaseline.peakmem_loaded`` (same process work without
  the transcription), scikit-image style. RSS does not see CUDA device memory.
"""

from . import common as c


class Memory(c.ModelBenchmark):
    repeat = 1

    def setup(self, preset, batch, seconds):
        self.asr = c.load_model(preset)
        self.wavs = c.clips(seconds, batch)
        self.n = c.decode_tokens(seconds)
        self.warm_once((preset, batch, seconds), c.transcribe, self.asr, self.wavs, c.WARMUP_TOKENS)

    def track_peak_bytes(self, preset, batch, seconds):
        c.sync()
        c.clear_cache()
        c.reset_peak()
        c.transcribe(self.asr, self.wavs, self.n)
        c.sync()
        return c.peak_bytes()

    track_peak_bytes.unit = "bytes"

    def peakmem_transcribe(self, preset, batch, seconds):
        c.transcribe(self.asr, self.wavs, self.n)
        c.sync()


class HostBaseline(c.ModelBenchmark):
    """Process max RSS after importing and loading the model (the floor of ``peakmem_transcribe``)."""

    params = [c.PRESETS]
    param_names = ["preset"]
    repeat = 1

    def setup(self, preset):
        self.asr = c.load_model(preset)

    def peakmem_loaded(self, preset):
        c.sync()


class Weights(c.ModelBenchmark):
    params = [c.PRESETS]
    param_names = ["preset"]
    repeat = 1

    def setup(self, preset):
        self.asr = c.load_model(preset)

    def track_weight_bytes(self, preset):
        from mlx.utils import tree_flatten

        return sum(int(v.nbytes) for _, v in tree_flatten(self.asr.net.parameters()))

    track_weight_bytes.unit = "bytes"
