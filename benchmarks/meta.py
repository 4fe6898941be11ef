"""Run context recorded as asv values, so every result file says what it measured:

* ``Context.track_synthetic_weights``: 0 for a real checkpoint, 1 for the synthetic (seeded random)
  checkpoint with the released shapes, 2 for the tiny synthetic test model. Reports label numbers
  as synthetic from this value.
* ``Context.track_reference_blas``: 1 when MLX calls the slow reference BLAS in the benchmark
  processes (Linux CPU without OpenBLAS preloaded), else 0.
* ``Policy.track_policy``: the backend policy the benchmark processes ran with
  (`funasr_nano.runtime.backend`), one number per field, so a changed choice shows up in
  ``asv compare`` next to the timings it moved; skipped on commits before the policy existed.
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


class Policy:
    """The backend policy, one tracked number per field: rows (0 = never) for the row thresholds,
    bits for the quantized compute dtype, 1/0 for the choices between two forms."""

    params = [["dequant_min_rows", "compiled_decode_rows", "quant_compute_bits", "frontend_mlx", "step_ops_fast",
               "dequant_chunked", "encoder_eval_every", "bf16_audio_compute_bits", "bf16_llm_compute_bits", "fsmn_conv"]]
    param_names = ["field"]
    timeout = 120
    version = c.SUITE_VERSION

    def setup(self, field):
        try:
            from funasr_nano.runtime.backend import resolve_policy
        except ImportError as e:
            raise NotImplementedError(f"no backend policy in this version: {e}")
        self.policy = resolve_policy()

    def track_policy(self, field):
        p = self.policy
        return float({
            "dequant_min_rows": p.dequant_min_rows or 0,
            "compiled_decode_rows": p.compiled_decode_rows,
            "quant_compute_bits": {"fp32": 32, "bf16": 16, "fp16": 16}[p.quant_compute],
            "frontend_mlx": p.frontend == "mlx",
            "step_ops_fast": p.step_ops == "fast",
            "dequant_chunked": p.dequant_chunked,
            "encoder_eval_every": getattr(p, "encoder_eval_every", 0),
            # older commits computed bf16 groups as stored
            "bf16_audio_compute_bits": 32 if getattr(p, "bf16_audio_compute", "bf16") == "fp32" else 16,
            "bf16_llm_compute_bits": 32 if getattr(p, "bf16_llm_compute", "bf16") == "fp32" else 16,
            "fsmn_conv": getattr(p, "fsmn_conv", False),
        }[field])

    track_policy.unit = "policy value (rows, 0 = never; bits; 1/0)"


class Load(c.ModelBenchmark):
    params = [c.PRESETS]
    param_names = ["preset"]
    repeat = (2, 3, 120.0)

    def setup(self, preset):
        if not c._supports_preset(preset):
            raise NotImplementedError(f"preset {preset!r} is not available in this version")
        why = c.unsupported_mode_reason(preset)
        if why:
            raise NotImplementedError(why)
        self.warm_once((preset,), self.time_load, preset)  # converts the cache, fills the page cache

    def time_load(self, preset):
        asr = c.load_fresh(preset)
        c.sync()
        del asr
        c.clear_cache()


class Calibration:
    """A fixed MLX workload that uses nothing of this package: one 1024^3 float32 GEMM (compute-bound,
    like the encoder and the prefill) and 8 GEMVs of 1x2048 @ 2048x8192 float32 (64 MB of weights
    each: memory-bound, like a decode step). Its time moves only with the machine, its load and the
    MLX / BLAS stack, so `funasr-nano bench compare` uses it to tell a slower machine from a slower
    commit (both sides of a comparison should show the same calibration time)."""

    number = 1
    repeat = (10, 20, 10.0)
    rounds = 1
    warmup_time = 0.0
    timeout = 600
    version = c.SUITE_VERSION

    def setup(self):
        import mlx.core as mx

        key = mx.random.key(0)
        k1, k2, k3, k4 = mx.random.split(key, 4)
        self.a = mx.random.normal((1024, 1024), key=k1)
        self.b = mx.random.normal((1024, 1024), key=k2)
        self.x = mx.random.normal((1, 2048), key=k3)
        self.w = mx.random.normal((2048, 8192), key=k4)
        c.sync(self.a, self.b, self.x, self.w)
        self.time_calibration()  # first-call costs (BLAS load, allocations)

    def time_calibration(self):
        y = self.a @ self.b
        z = [self.x @ self.w + i for i in range(8)]
        c.sync(y, *z)
