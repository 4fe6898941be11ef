import pytest

# Before any test module imports mlx.core: MLX's Linux CPU backend gets OpenBLAS, building the shim
# when this environment has none yet (funasr_nano/runtime/blas.py; `import funasr_nano` alone never builds).
from funasr_nano.runtime import blas

blas.setup()


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A TINY synthetic checkpoint in the official layout (written once per session)."""
    from funasr_nano.synthetic import write_synthetic_checkpoint

    return write_synthetic_checkpoint(tmp_path_factory.mktemp("tiny_ckpt") / "tiny", preset="tiny", seed=0)
