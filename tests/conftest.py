import sys
from pathlib import Path

# The reference harness lives beside the tests and is imported as a plain module.
sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402

# Before any test module imports mlx.core: MLX's Linux CPU backend gets OpenBLAS (funasr_nano/blas.py).
import funasr_nano  # noqa: E402,F401


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A TINY synthetic checkpoint in the official layout (written once per session)."""
    from funasr_nano.synthetic import write_synthetic_checkpoint

    return write_synthetic_checkpoint(tmp_path_factory.mktemp("tiny_ckpt") / "tiny", preset="tiny", seed=0)
