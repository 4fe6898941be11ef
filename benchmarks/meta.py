"""Run context recorded as asv values, so every result file says what it measured:

* ``Context.track_synthetic_weights``: 0 for a real checkpoint, 1 for the synthetic (seeded random)
  checkpoint with the released shapes, 2 for the tiny synthetic test model. Reports label numbers
  as synthetic from this value.
* ``Context.track_reference_blas``: 1 when MLX calls the slow reference BLAS in the benchmark
  processes (Linux CPU without OpenBLAS preloaded), else 0.
* ``Load.time_load``: loading a checkpoint (safetensors cache already converted, files in the page
  cache) into a ready model, per preset (quantization happens here).
"""

from . import common as c


class Context:
    timeout = 600
    version = c.SUITE_VERSION

    def track_synthetic_weights(self):
        if not c.uses_synthetic_weights():
            return 0.0
        return 2.0 if c.synthetic_preset() == "tiny" and not c.os.environ.get(c.ENV_MODEL) else 1.0

    track_synthetic_weights.unit = "0 real, 1 synthetic, 2 synthetic tiny"

    def track_reference_blas(self):
        import mlx.core as mx

        c.sync(mx.ones((64, 64)) @ mx.ones((64, 64)))  # make MLX load its BLAS
        try:
            from funasr_nano.bench.machine import backend_and_device, blas, blas_label
        except ImportError as e:
            raise NotImplementedError(f"no BLAS detection in this version: {e}")

        return 1.0 if blas_label(blas(), backend_and_device()["backend"]) == "reference" else 0.0

    track_reference_blas.unit = "1 = reference BLAS"


class Load(c.ModelBenchmark):
    params = [c.PRESETS]
    param_names = ["preset"]
    repeat = (2, 3, 120.0)

    def setup(self, preset):
        if not c._supports_preset(preset):
            raise NotImplementedError(f"preset {preset!r} is not available in this version")
        self.warm_once((preset,), self.time_load, preset)  # converts the cache, fills the page cache

    def time_load(self, preset):
        asr = c.load_fresh(preset)
        c.sync()
        del asr
        c.clear_cache()
