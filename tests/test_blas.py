"""The OpenBLAS set-up for MLX's Linux CPU backend (funasr_nano/runtime/blas.py + assets/blas_forward.c).

The shim changes which BLAS routine computes MLX's float32 products, so every operand layout it
forwards (row/column vector, transposed or not, strided, with alpha/beta) is checked against a
float64 numpy product here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import funasr_nano  # noqa: F401  (sets up the BLAS before mlx.core is imported)
from funasr_nano.runtime import blas

import mlx.core as mx  # noqa: E402

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux CPU backend only")


def _child(code: str, **env) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "FUNASR_NANO_BLAS", "FUNASR_NANO_NO_OPENBLAS")}
    e.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


STATUS = ("import json, funasr_nano, funasr_nano.runtime.blas as b, funasr_nano.runtime.platform_info as p; "
          "i = p.blas_info(); print(json.dumps({'mode': b.status()['mode'], 'blas': i['blas'], "
          "'path': i['path']}))")


@linux
def test_import_gives_mlx_openblas_with_gemv_forwarding():
    """A fresh `import funasr_nano` (no LD_PRELOAD) builds/loads the shim and MLX's cblas_sgemm
    resolves to it: this is the product's CPU speed path, so it must not silently fall back."""
    assert blas.scipy_openblas_library() is not None, "scipy-openblas32 (a Linux dependency) is missing"
    st = _child(STATUS)
    assert st["mode"] == "forward", st
    assert st["blas"] == "openblas" and st["path"].endswith(blas.SHIM_NAME), st


@linux
def test_opt_out_and_import_order():
    off = _child(STATUS, FUNASR_NANO_BLAS="off")
    assert off["mode"] == "off" and off["blas"] == "reference", off
    late = _child("import json, mlx.core, funasr_nano.runtime.blas as b; print(json.dumps(b.status()))")
    assert late["mode"] == "too-late" and "LD_PRELOAD" in late["detail"], late


@linux
def test_preloaded_shim_is_respected():
    lib = blas.library_for_preload()
    assert lib and os.path.exists(lib)
    st = _child(STATUS, LD_PRELOAD=lib)
    assert st["mode"] == "preloaded" and st["blas"] == "openblas", st


def _layouts(a: np.ndarray, b: np.ndarray):
    """(A, B) MLX operands equal to a and b, stored plain or transposed (as MLX passes them)."""
    for ta in (False, True):
        for tb in (False, True):
            A = mx.array(np.ascontiguousarray(a.T)).T if ta else mx.array(a)
            B = mx.array(np.ascontiguousarray(b.T)).T if tb else mx.array(b)
            yield f"{'T' if ta else 'N'}{'T' if tb else 'N'}", A, B


@pytest.mark.parametrize("m,k,n", [(1, 64, 96), (2, 64, 96), (3, 33, 7), (4, 64, 96), (96, 64, 1),
                                   (5, 17, 1), (1, 1, 5), (1, 64, 1), (9, 31, 13), (1, 1024, 3072)])
def test_products_equal_float64(m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)  # bounds the rounding error
    for lab, A, B in _layouts(a, b):
        out = np.array(A @ B)
        assert out.shape == (m, n)
        err = float(np.max(np.abs(out - ref) / scale))
        assert err < 1e-5, (lab, err)


@pytest.mark.parametrize("m,k,n", [(1, 40, 24), (3, 40, 24), (24, 40, 1)])
def test_addmm_alpha_beta(m, k, n):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    out = np.array(mx.addmm(mx.array(c), mx.array(a), mx.array(b), alpha=0.5, beta=2.0))
    np.testing.assert_allclose(out, 2.0 * c + 0.5 * (a.astype(np.float64) @ b), rtol=1e-5, atol=1e-5)


def test_strided_and_batched_rows():
    """Slices (non-unit leading dimensions) and a [B, 1, K] batch of row vectors."""
    rng = np.random.default_rng(3)
    big = rng.standard_normal((8, 200)).astype(np.float32)
    w = rng.standard_normal((300, 96)).astype(np.float32)
    x = mx.array(big)[2:3, 10:106]          # one row, lda 200
    W = mx.array(w)[100:196, :].T            # transposed view with its own stride
    np.testing.assert_allclose(np.array(x @ W.T), big[2:3, 10:106] @ w[100:196, :].T.T, rtol=1e-5, atol=1e-4)
    xb = mx.array(rng.standard_normal((4, 1, 96)).astype(np.float32))
    out = np.array(xb @ W)
    np.testing.assert_allclose(out, np.array(xb) @ w[100:196, :].T, rtol=1e-5, atol=1e-4)


@linux
def test_nan_garbage_cannot_leak_through_beta_zero():
    """MLX hands sgemm uninitialised output with beta=0: a NaN already in that memory must not
    survive. Fill the allocator's free list with NaN buffers of the output size, then multiply."""
    for _ in range(4):
        junk = mx.full((1, 96), float("nan"))
        mx.eval(junk)
        del junk
    a = mx.ones((1, 64))
    b = mx.ones((64, 96))
    out = np.array(a @ b)
    assert np.all(out == 64.0)


@linux
def test_forwarding_counter_counts_row_products():
    if blas.status()["mode"] != "forward":
        pytest.skip(f"shim not loaded in this process ({blas.status()['mode']}); checked in a child above")
    before = blas.forwarded_calls()
    mx.eval(mx.ones((1, 128)) @ mx.ones((128, 64)))
    assert blas.forwarded_calls() == before + 1
    mx.eval(mx.ones((16, 128)) @ mx.ones((128, 64)))   # a real GEMM: not forwarded
    assert blas.forwarded_calls() == before + 1


@linux
def test_load_warns_on_the_reference_blas(tiny_ckpt):
    """Loading a model while MLX runs on its reference BLAS says so, with the fix."""
    code = (f"import warnings, funasr_nano\n"
            f"with warnings.catch_warnings(record=True) as w:\n"
            f"    warnings.simplefilter('always')\n"
            f"    funasr_nano.load({str(tiny_ckpt)!r})\n"
            f"import json; print(json.dumps([str(x.message) for x in w if x.category is RuntimeWarning]))")
    msgs = _child(code, FUNASR_NANO_BLAS="off")
    assert any("reference BLAS" in m and "import funasr_nano before mlx.core" in m for m in msgs), msgs
    assert not any("reference BLAS" in m for m in _child(code)), "warned although OpenBLAS is in use"
