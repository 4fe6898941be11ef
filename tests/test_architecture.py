"""The package's layout as ARCHITECTURE.md describes it: imports point the way its table says, and
importing any module is cheap (no compiler, nothing written to the cache)."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "funasr_nano"
OWN_NODES = ("runtime.backend",)  # modules with their own row, apart from their package


def _rules() -> dict:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rules = {}
    for row in re.findall(r"^\| `([\w.]+)`[^|]*\| (.+) \|$", text, re.M):
        name, allowed = row
        rules[name] = set(re.findall(r"`([\w.]+)`", allowed))
    return rules


def _node(module: str) -> str:
    rest = module.split(".")[1:]  # drop "funasr_nano"
    if not rest or rest[0] in ("__init__", "__main__", "__version__"):
        return "funasr_nano"
    for own in OWN_NODES:
        if ".".join(rest).startswith(own):
            return own
    return rest[0]


def _imports(path: Path):
    """(line, absolute module) of every import of the package in a file, function-level ones too."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    base = parts[:-1]  # the package relative imports start from (for __init__.py: the package itself)
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                b = base[: len(base) - (n.level - 1)]
                mod = ".".join(b + ([n.module] if n.module else []))
            else:
                mod = n.module or ""
            if mod.startswith("funasr_nano"):
                names = [f"{mod}.{a.name}" for a in n.names] if n.module is None or mod == "funasr_nano" else [mod]
                for m in names:
                    yield n.lineno, m
        elif isinstance(n, ast.Import):
            for a in n.names:
                if a.name.startswith("funasr_nano"):
                    yield n.lineno, a.name


def test_every_package_has_a_rule():
    rules = _rules()
    nodes = {_node("funasr_nano." + ".".join(p.relative_to(PKG).with_suffix("").parts)) for p in PKG.rglob("*.py")}
    assert nodes <= set(rules), f"packages without a row in ARCHITECTURE.md: {sorted(nodes - set(rules))}"
    assert {"model", "runtime", "precision", "checkpoint", "synthetic", "io", "cli"} <= nodes


def test_imports_follow_architecture_md():
    rules = _rules()
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        src = _node("funasr_nano." + ".".join(path.relative_to(PKG).with_suffix("").parts))
        for line, mod in _imports(path):
            dst = _node(mod)
            if dst != src and dst not in rules[src]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {src} imports {mod} ({dst})")
    assert not bad, "imports ARCHITECTURE.md does not allow:\n" + "\n".join(bad)


def test_model_imports_nothing_else_of_the_package():
    assert _rules()["model"] == set()
    for path in (PKG / "model").rglob("*.py"):
        others = [m for _, m in _imports(path) if _node(m) != "model"]
        assert not others, f"{path}: {others}"


def test_rule_checker_catches_a_violation(tmp_path):
    """The checker reads relative imports the way Python does (a model file importing the runtime is caught)."""
    f = PKG / "model" / "_probe_violation.py"
    f.write_text("def f():\n    from ..runtime import asr\n", encoding="utf-8")
    try:
        assert [(_node(m)) for _, m in _imports(f)] == ["runtime"]
    finally:
        f.unlink()


CHEAP_IMPORT = r"""
import importlib, os, pkgutil, subprocess, sys
_Popen = subprocess.Popen
class Guard(_Popen):  # every subprocess helper goes through Popen
    def __init__(self, args, *a, **k):
        argv = [args] if isinstance(args, (str, bytes)) else list(args)
        if os.path.basename(str(argv[0])) in ("cc", "gcc", "clang", "c++", "g++", "ld") or any(
                str(x).endswith(".c") for x in argv):
            raise AssertionError(f"a C compiler ran at import: {argv}")
        super().__init__(args, *a, **k)
subprocess.Popen = Guard
import funasr_nano
assert "mlx.core" not in sys.modules, "import funasr_nano imported mlx.core"
mods = []
for m in pkgutil.walk_packages(funasr_nano.__path__, "funasr_nano."):
    if m.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(m.name)
    except ImportError as e:  # an optional dependency this environment lacks
        print("skipped", m.name, e, file=sys.stderr)
        continue
    mods.append(m.name)
print(len(mods))
"""


def test_importing_any_module_runs_no_compiler_and_writes_nothing(tmp_path):
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD",)}
    env.update(FUNASR_NANO_CACHE=str(cache), XDG_CACHE_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-c", CHEAP_IMPORT], env=env, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) > 40  # every module was imported, not a handful
    assert not cache.exists() and not (tmp_path / "xdg").exists(), "an import wrote to the cache"
