"""Machine fingerprint (funasr_nano.bench.machine): fields, stable hardware names, asv machine file."""

import json
import os
import platform
import subprocess
import sys

import pytest

from funasr_nano.bench import machine as m
from tests.support.optional import need

OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"


@pytest.fixture(scope="module")
def fp():
    return m.fingerprint()


def test_fingerprint_fields(fp):
    for key in m.MACHINE_KEYS:
        assert key in fp, key
        assert isinstance(fp[key], str), key
    assert int(fp["num_cpu"]) >= 1
    assert int(fp["ram"]) > 2 ** 30
    assert fp["backend"] in ("cpu", "metal", "cuda")
    assert fp["mlx"][0].isdigit()
    assert fp["cpu"] and fp["cpu"] != "unknown"
    if platform.system() == "Darwin":
        assert fp["os"].startswith("macOS ")  # not the Darwin kernel release
    else:
        assert platform.release() not in fp["os"] or fp["os"].startswith("Linux")
    if platform.system() == "Linux" and fp["backend"] == "cpu":
        assert fp["blas"] in ("openblas", "reference", "mkl", "blis", "atlas", "unknown")
    assert "details" in fp and "kernel" in fp["details"]


def test_name_is_stable_and_encodes_hardware(fp):
    again = m.fingerprint()
    assert again["machine"] == fp["machine"]
    name = fp["machine"]
    assert name == name.lower() and " " not in name
    assert f"{fp['num_cpu']}c" in name or fp["backend"] == "metal"
    assert fp["backend"] in name
    assert fp["mlx"] not in name  # software versions stay out of the name


def test_override_name():
    assert m.fingerprint("my-box")["machine"] == "my-box"


@pytest.mark.parametrize("fields, expected", [
    ({"cpu": "Apple M2 Max", "num_cpu": "12", "ram": str(64 * 2 ** 30), "gpu": "Apple M2 Max", "gpu_cores": "38",
      "backend": "metal", "blas": "accelerate"}, "apple-m2-max-38gpu-64gb-metal"),
    ({"cpu": "Intel(R) Xeon(R) Platinum 8480+", "num_cpu": "16", "ram": str(128 * 2 ** 30),
      "gpu": "NVIDIA H100 80GB HBM3", "gpu_cores": "", "backend": "cuda", "blas": "n/a"},
     "nvidia-h100-80gb-hbm3-16c-128gb-cuda"),
    ({"cpu": "AMD EPYC", "num_cpu": "2", "ram": "25276502016", "gpu": "none", "gpu_cores": "", "backend": "cpu",
      "blas": "reference"}, "amd-epyc-2c-24gb-cpu-reference"),
    ({"cpu": "Intel(R) Core(TM) i7-9750H CPU @ 2.60GHz", "num_cpu": "12", "ram": str(32 * 2 ** 30), "gpu": "none",
      "gpu_cores": "", "backend": "cpu", "blas": "openblas"}, "intel-core-i7-9750h-12c-32gb-cpu-openblas"),
])
def test_machine_name_examples(fields, expected):
    assert m.machine_name(fields) == expected


def test_macos_version_not_kernel(monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(platform, "mac_ver", lambda: ("15.3.1", ("", "", ""), "arm64"))
    monkeypatch.setattr(platform, "release", lambda: "24.3.0")
    assert m.os_version() == "macOS 15.3.1"


@pytest.mark.parametrize("info, backend, label", [
    ({"blas": "openblas", "path": OPENBLAS}, "cpu", "openblas"),
    ({"blas": "reference", "path": "/x/mlx_cpu.libs/libblas-123.so.3.10.0"}, "cpu", "reference"),
    ({"blas": "none"}, "cuda", "n/a"),
])
def test_blas_label(info, backend, label, monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert m.blas_label(info, backend) == label


def test_machine_file_merge(tmp_path, fp):
    path = tmp_path / ".asv-machine.json"
    path.write_text(json.dumps({"other": {"machine": "other", "cpu": "x"}, "version": 1}))
    m.write_machine_file(fp, path)
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert data["other"]["cpu"] == "x"  # other entries are kept
    entry = data[fp["machine"]]
    assert set(entry) == set(m.MACHINE_KEYS)
    assert all(isinstance(v, str) for v in entry.values())
    # asv itself accepts the entry
    Machine = need("asv.machine").Machine
    loaded = Machine.load(machine_name=fp["machine"], _path=str(path), interactive=False)
    assert loaded.machine == fp["machine"]


def test_main_json_no_write(capsys, tmp_path):
    assert m.main(["--json", "--no-write", "--machine", "t1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["machine"] == "t1"
    assert m.main(["--machine-file", str(tmp_path / "mf.json"), "--machine", "t2"]) == 0
    assert "t2" in json.loads((tmp_path / "mf.json").read_text())


@pytest.mark.skipif(platform.system() != "Linux", reason="LD_PRELOAD / BLAS choice is a Linux CPU matter")
def test_blas_follows_ld_preload():
    """The fingerprint reports the BLAS the process really uses: reference with funasr_nano's
    OpenBLAS set-up switched off and nothing preloaded, openblas with OpenBLAS preloaded or set up
    at import (run in children: LD_PRELOAD acts at process start)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "FUNASR_NANO_BLAS")}
    cmd = [sys.executable, "-m", "funasr_nano.bench.machine", "--json", "--no-write"]
    auto = json.loads(subprocess.check_output(cmd, env=env, text=True))
    if auto["backend"] != "cpu":
        pytest.skip("not the CPU backend")
    assert auto["blas"] == "openblas"
    plain = json.loads(subprocess.check_output(cmd, env={**env, "FUNASR_NANO_BLAS": "off"}, text=True))
    if plain["backend"] != "cpu":
        pytest.skip("not the CPU backend")
    assert plain["blas"] == "reference"
    assert plain["machine"].endswith("-cpu-reference")
    if not os.path.exists(OPENBLAS):
        pytest.skip(f"the system OpenBLAS ({OPENBLAS}) is not installed: apt-get install libopenblas0-pthread")
    pre = json.loads(subprocess.check_output(cmd, env={**env, "FUNASR_NANO_BLAS": "off", "LD_PRELOAD": OPENBLAS},
                                             text=True))
    assert pre["blas"] == "openblas"
    assert pre["machine"].endswith("-cpu-openblas")


@pytest.mark.skipif(platform.system() != "Linux", reason="Linux CPU only")
def test_preload_openblas_option():
    """`funasr-nano machine --preload-openblas` describes what `funasr-nano bench` gives the benchmarks."""
    if m.openblas_library() is None:
        pytest.skip("OpenBLAS not installed")
    fp = m.fingerprint_with_openblas()
    if fp["backend"] == "cpu":
        assert fp["blas"] == "openblas"
