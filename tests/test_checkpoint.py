"""Checkpoint I/O without torch: reader, writer, safetensors cache, validation, synthetic checkpoints.

torch is used here only as the reference implementation (to write files our reader must accept
and to read files our writer produces); the product code never imports it.
"""

from __future__ import annotations

import collections
import json
import math
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import yaml

from funasr_nano.checkpoint import INDEX_NAME, CheckpointError
from funasr_nano.checkpoint.torch_writer import LazyTensor, write_model_pt
from funasr_nano.checkpoint.cache import cache_dir_for, cache_is_fresh, convert_to_safetensors, load_checkpoint_weights, load_safetensors_dir
from funasr_nano.checkpoint.resolve import check_state_dict, resolve_checkpoint
from funasr_nano.checkpoint.torch_reader import read_model_pt
from funasr_nano.model.layout import expected_shapes
from funasr_nano.synthetic.sizes import get_preset

from tests.support.optional import need

torch = need("torch")


# ----------------------------------------------------------------------------- helpers


def _bits(a: mx.array) -> np.ndarray:
    """Exact bit pattern / value of an MLX array as numpy (bf16 -> uint16 bits)."""
    if a.dtype == mx.bfloat16:
        return np.asarray(a.view(mx.uint16))
    return np.asarray(a)


def _torch_bits(t) -> np.ndarray:
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


_TORCH_TO_MX = {torch.float32: mx.float32, torch.bfloat16: mx.bfloat16, torch.float16: mx.float16,
                torch.int64: mx.int64, torch.int32: mx.int32, torch.int8: mx.int8,
                torch.uint8: mx.uint8, torch.bool: mx.bool_, torch.float64: mx.float64}


def _assert_same(ours: mx.array, ref):
    assert tuple(ours.shape) == tuple(ref.shape)
    assert ours.dtype == _TORCH_TO_MX[ref.dtype]
    np.testing.assert_array_equal(_bits(ours), _torch_bits(ref))


def _torch_zip_with_pickle(path: Path, pkl: bytes, records: dict[str, bytes] | None = None):
    """A structurally valid torch zip whose data.pkl is ``pkl``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
        for name, data in (records or {}).items():
            zf.writestr(f"archive/{name}", data)
        zf.writestr("archive/version", "3\n")


def _small_state_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    return collections.OrderedDict(
        [
            ("enc.w", torch.randn(8, 6, generator=g).to(torch.bfloat16)),
            ("enc.b", torch.randn(8, generator=g).to(torch.bfloat16)),
            ("dec.w", torch.randn(5, 3, 2, generator=g).to(torch.bfloat16)),
            ("dec.emb", torch.randn(40, 8, generator=g).to(torch.bfloat16)),
            ("count", torch.arange(4, dtype=torch.int64)),
            ("f32", torch.randn(3, 3, generator=g)),
        ]
    )


# ----------------------------------------------------------------------------- layout


def test_expected_shapes_real_counts():
    shapes = expected_shapes(*get_preset("real"))
    want = {"audio_encoder.": (914, 221_136_992), "audio_adaptor.": (36, 12_604_928),
            "llm.": (311, 751_632_384)}
    for prefix, (n, params) in want.items():
        keys = [k for k in shapes if k.startswith(prefix)]
        assert len(keys) == n, prefix
        assert sum(math.prod(shapes[k]) for k in keys) == params, prefix
    assert len(shapes) == 1261
    assert shapes["audio_encoder.encoders0.0.self_attn.linear_q_k_v.weight"] == (1536, 560)
    assert shapes["audio_encoder.encoders0.0.norm1.weight"] == (560,)
    assert shapes["audio_encoder.encoders.48.self_attn.linear_q_k_v.weight"] == (1536, 512)
    assert shapes["audio_encoder.tp_encoders.19.self_attn.fsmn_block.weight"] == (512, 1, 11)
    assert shapes["audio_adaptor.blocks.1.feed_forward.w_1.weight"] == (256, 1024)
    assert shapes["llm.model.layers.27.self_attn.q_proj.weight"] == (2048, 1024)
    assert shapes["llm.model.layers.0.self_attn.k_norm.weight"] == (128,)
    assert shapes["llm.lm_head.weight"] == (151936, 1024)


# ----------------------------------------------------------------------------- writer


def test_writer_roundtrip_through_torch_load(tmp_path):
    rng = np.random.default_rng(1)
    special = np.array([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 3.0e38, -3.4e38, 1e-40, np.inf, -np.inf],
                       np.float32)
    src = collections.OrderedDict(
        [
            ("a.weight", rng.standard_normal((7, 5)).astype(np.float32)),
            ("a.bias", rng.standard_normal(5)),                          # float64 in, bf16 out
            ("special", special),
            ("mx_f32", mx.random.normal((4, 6), key=mx.random.key(0))),
            ("mx_bf16", mx.random.normal((3, 2), key=mx.random.key(1)).astype(mx.bfloat16)),
            ("ids", np.arange(12, dtype=np.int64).reshape(3, 4)),
            ("mask", np.array([True, False, True])),
            ("scalar", np.array(2.5, np.float32)),
            ("empty", np.zeros((0, 3), np.float32)),
            ("lazy", LazyTensor((2, 3), lambda: np.full((2, 3), 0.5, np.float32))),
        ]
    )
    path = write_model_pt(tmp_path / "model.pt", src)
    obj = torch.load(path, weights_only=True)
    assert list(obj) == ["state_dict"]
    sd = obj["state_dict"]
    assert isinstance(sd, collections.OrderedDict)
    assert list(sd) == list(src)
    for key, value in src.items():
        if isinstance(value, LazyTensor):
            value = value.fn()
        if isinstance(value, mx.array):
            ref = torch.from_numpy(np.array(value.astype(mx.float32)))
        else:
            ref = torch.from_numpy(np.array(value))
        if ref.is_floating_point():
            ref = ref.to(torch.bfloat16)  # torch's own rounding (round to nearest even)
        assert sd[key].dtype == ref.dtype, key
        assert torch.equal(sd[key], ref), key
    # our reader gives back the same bits
    ours = read_model_pt(path)
    for key in src:
        _assert_same(ours[key], sd[key])
    # storages are 64-byte aligned like torch's own files (mmap loading works)
    mm = torch.load(path, weights_only=True, mmap=True)["state_dict"]
    assert torch.equal(mm["a.weight"], sd["a.weight"])


def test_bf16_rounding_matches_torch():
    from funasr_nano.checkpoint.dtypes import float_to_bf16_bits

    x = np.random.default_rng(3).standard_normal(300_001).astype(np.float32) * np.float32(100)
    x[:8] = [np.nan, np.inf, -np.inf, 3.4e38, -0.0, 1e-45, 1.00390625, 1.01171875]  # ties, denormals
    ours = float_to_bf16_bits(x, chunk_elems=4096)  # many chunks, ragged last one
    ref = torch.from_numpy(x).to(torch.bfloat16)
    assert torch.isnan(torch.from_numpy(ours.view(np.int16)).view(torch.bfloat16)[0])
    np.testing.assert_array_equal(ours[1:], _torch_bits(ref)[1:])


def test_writer_keeps_dtypes_when_asked(tmp_path):
    src = {"f32": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
           "f16": np.array([1.5, -2.25], np.float16), "i32": mx.array([1, -2, 3], dtype=mx.int32)}
    sd = torch.load(write_model_pt(tmp_path / "m.pt", src, dtype=None), weights_only=True)["state_dict"]
    assert sd["f32"].dtype == torch.float32 and torch.equal(sd["f32"], torch.from_numpy(src["f32"]))
    assert sd["f16"].dtype == torch.float16 and torch.equal(sd["f16"], torch.from_numpy(src["f16"]))
    assert sd["i32"].dtype == torch.int32 and sd["i32"].tolist() == [1, -2, 3]
    sd = torch.load(write_model_pt(tmp_path / "m16.pt", src, dtype="float16"), weights_only=True)["state_dict"]
    assert sd["f32"].dtype == torch.float16 and sd["i32"].dtype == torch.int32


def test_writer_is_atomic_and_streams(tmp_path):
    target = tmp_path / "model.pt"
    write_model_pt(target, {"x": np.ones(3, np.float32)})
    before = target.read_bytes()
    calls = []

    def ok(name):
        def fn():
            calls.append(name)
            return np.zeros((2, 2), np.float32)
        return fn

    def boom():
        calls.append("boom")
        raise RuntimeError("generator failed")

    sd = {"a": LazyTensor((2, 2), ok("a")), "b": LazyTensor((2, 2), boom), "c": LazyTensor((2, 2), ok("c"))}
    with pytest.raises(RuntimeError, match="generator failed"):
        write_model_pt(target, sd)
    assert calls == ["a", "boom"]  # produced one at a time, in order
    assert target.read_bytes() == before  # old file untouched
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left behind


def test_writer_shape_mismatch_of_lazy_tensor(tmp_path):
    with pytest.raises(CheckpointError, match="announced"):
        write_model_pt(tmp_path / "m.pt", {"a": LazyTensor((2, 2), lambda: np.zeros(3, np.float32))})
    assert not (tmp_path / "m.pt").exists()


# ----------------------------------------------------------------------------- reader


def test_reader_matches_torch_save_all_dtypes_and_views(tmp_path):
    base = torch.randn(6, 10)
    bf = torch.randn(9, 4).to(torch.bfloat16)
    sd = collections.OrderedDict(
        [
            ("transposed", base.t()),                         # non-contiguous
            ("window", base[2:, 3:7]),                        # offset + strides
            ("row", base[3]),                                 # shares the storage, offset only
            ("bf16", bf),
            ("bf16_t", bf.t()[1:, ::2]),                      # bf16 non-contiguous view
            ("fp16", torch.randn(3, 4).half()),
            ("fp64", torch.randn(2, 2, dtype=torch.float64)),
            ("int64", torch.arange(20).reshape(4, 5)[:, ::2]),
            ("int32", torch.tensor([-7, 8], dtype=torch.int32)),
            ("int8", torch.tensor([-1, 2], dtype=torch.int8)),
            ("uint8", torch.tensor([250, 3], dtype=torch.uint8)),
            ("bool", torch.tensor([True, False, True])),
            ("scalar", torch.tensor(3.5)),
            ("empty", torch.zeros(0, 4)),
            ("broadcast", torch.randn(1, 4).expand(3, 4)),    # stride 0
            ("param", torch.nn.Parameter(torch.randn(2, 2))),
        ]
    )
    for i, wrap in enumerate([lambda s: {"state_dict": s}, lambda s: {"model": s, "epoch": 3}, lambda s: s]):
        path = tmp_path / f"m{i}.pt"
        torch.save(wrap(sd), path)
        ours = read_model_pt(path)
        assert list(ours) == list(sd)
        for key, ref in sd.items():
            _assert_same(ours[key], ref)


def test_reader_accepts_module_state_dict_with_metadata(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4)).to(torch.bfloat16)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "m.pt")  # OrderedDict with _metadata
    ours = read_model_pt(tmp_path / "m.pt")
    for key, ref in net.state_dict().items():
        _assert_same(ours[key], ref)


def test_reader_rejects_non_state_dicts(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="no state dict"):
        read_model_pt(tmp_path / "list.pt")
    torch.save({"state_dict": {"note": "hello", "epoch": 3}}, tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="no tensors under state_dict"):
        read_model_pt(tmp_path / "none.pt")
    # non-tensor entries beside tensors are skipped, as FunASR's loader does (tests/test_forms.py)
    torch.save({"state_dict": {"a": torch.zeros(2), "note": "hello"}}, tmp_path / "mixed.pt")
    assert list(read_model_pt(tmp_path / "mixed.pt")) == ["a"]


# ----------------------------------------------------------------------------- hostile / broken files


class _Reduce:
    """Pickles as a call of ``func(*args)`` (what a malicious checkpoint does)."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _global_call_pickle(module: str, name: str, arg: str) -> bytes:
    """Protocol-2 opcodes: {'state_dict': {'w': module.name(arg)}} written by hand."""
    b = arg.encode()
    return (b"\x80\x02}X\n\x00\x00\x00state_dict}X\x01\x00\x00\x00w"
            + b"c" + module.encode() + b"\n" + name.encode() + b"\n"
            + b"X" + struct.pack("<I", len(b)) + b + b"\x85R" + b"ss.")


def _payloads(marker: Path):
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    shell = f"touch {marker}"
    return {
        "os.system": _global_call_pickle("os", "system", shell),
        "posix.system": pickle.dumps({"state_dict": {"w": _Reduce(os.system, (shell,))}}, protocol=2),
        "builtins.exec": _global_call_pickle("builtins", "exec", code),
        "builtins.eval": pickle.dumps({"state_dict": _Reduce(eval, (code,))}, protocol=2),
        "subprocess.Popen": pickle.dumps(
            {"state_dict": {"w": _Reduce(subprocess.Popen, (["touch", str(marker)],))}}, protocol=2),
    }


@pytest.mark.parametrize("name", ["os.system", "posix.system", "builtins.exec", "builtins.eval", "subprocess.Popen"])
def test_tampered_pickle_is_refused_and_not_executed(tmp_path, name):
    marker = tmp_path / "pwned"
    pkl = _payloads(marker)[name]
    path = tmp_path / "model.pt"
    _torch_zip_with_pickle(path, pkl)
    with pytest.raises(CheckpointError) as info:
        read_model_pt(path)
    assert name in str(info.value)
    assert "refusing" in str(info.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        convert_to_safetensors(path, tmp_path / "cache")
    with pytest.raises(CheckpointError):
        load_checkpoint_weights(tmp_path, cache_dir=tmp_path / "c2")
    assert not marker.exists()
    assert not (tmp_path / "cache").exists()


def test_tampered_payload_is_live_under_plain_pickle(tmp_path):
    """Control: the exec payload really runs when unpickled naively (so the test above means something)."""
    marker = tmp_path / "pwned"
    pickle.loads(_payloads(marker)["builtins.exec"])
    assert marker.read_text() == "pwned"


def test_payload_hidden_behind_real_tensors_is_refused(tmp_path):
    """A genuine torch file whose data.pkl gets a malicious entry appended to the state dict."""
    marker = tmp_path / "pwned"
    good = tmp_path / "good.pt"
    torch.save({"state_dict": _small_state_dict()}, good)
    with zipfile.ZipFile(good) as zf:
        records = {n: zf.read(n) for n in zf.namelist()}
    pkl_name = next(n for n in records if n.endswith("data.pkl"))
    # splice "'evil': builtins.exec(code)" just before the final SETITEMS/SETITEM/STOP
    pkl = records[pkl_name]
    assert pkl.endswith(b"us.")
    code = f"open({str(marker)!r}, 'w').write('pwned')".encode()
    evil = (b"X\x04\x00\x00\x00evilcbuiltins\nexec\nX" + struct.pack("<I", len(code)) + code + b"\x85R")
    records[pkl_name] = pkl[:-3] + evil + b"us."
    bad = tmp_path / "model.pt"
    with zipfile.ZipFile(bad, "w") as zf:
        for n, data in records.items():
            zf.writestr(n, data)
    with pytest.raises(CheckpointError, match="builtins.exec"):
        read_model_pt(bad)
    assert not marker.exists()


def test_out_of_bounds_view_is_refused(tmp_path):
    """A tensor record whose strides reach past its storage must not read foreign memory."""
    pkl = (b"\x80\x02}X\n\x00\x00\x00state_dict}X\x01\x00\x00\x00w"
           b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
           b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00M\x00\x10\x85K\x01\x85\x89)tRss.")
    path = tmp_path / "model.pt"
    _torch_zip_with_pickle(path, pkl, {"data/0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(CheckpointError, match="past the end"):
        read_model_pt(path)


def test_build_on_tensor_record_is_refused(tmp_path):
    """BUILD (setstate) on a rebuilt tensor would let a pickle rewrite its offset/strides."""
    pkl = (b"\x80\x02}X\n\x00\x00\x00state_dict}X\x01\x00\x00\x00w"
           b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
           b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x04\x85K\x01\x85\x89)tR"
           b"}X\x06\x00\x00\x00offsetM\x00\x10sbss.")
    path = tmp_path / "model.pt"
    _torch_zip_with_pickle(path, pkl, {"data/0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(CheckpointError, match="set state"):
        read_model_pt(path)


def test_not_a_zip(tmp_path):
    p = tmp_path / "model.pt"
    p.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a readable PyTorch zip"):
        read_model_pt(p)
    p.write_bytes(pickle.dumps({"state_dict": {}}, protocol=2))  # legacy-looking pickle
    with pytest.raises(CheckpointError, match="legacy"):
        read_model_pt(p)
    with pytest.raises(CheckpointError, match="no such file"):
        read_model_pt(tmp_path / "absent.pt")


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_zip(tmp_path, keep):
    good = tmp_path / "good.pt"
    torch.save({"state_dict": _small_state_dict()}, good)
    data = good.read_bytes()
    bad = tmp_path / "model.pt"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError):
        read_model_pt(bad)


def test_missing_storage_record(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"state_dict": _small_state_dict()}, good)
    bad = tmp_path / "model.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for n in zin.namelist():
            if not n.endswith("/data/2"):
                zout.writestr(n, zin.read(n))
    with pytest.raises(CheckpointError, match="storage record .*data/2.* missing"):
        read_model_pt(bad)


def test_corrupted_and_short_storage_records(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"state_dict": _small_state_dict()}, good)
    with zipfile.ZipFile(good) as zin:
        records = {n: zin.read(n) for n in zin.namelist()}
    key0 = next(n for n in records if n.endswith("/data/0"))
    short = tmp_path / "short.pt"
    with zipfile.ZipFile(short, "w") as zout:
        for n, d in records.items():
            zout.writestr(n, d[:-2] if n == key0 else d)
    with pytest.raises(CheckpointError, match="expected"):
        read_model_pt(short)
    # flip one byte of a stored record: the CRC check catches it
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zin:
        info = zin.getinfo(key0)
    n_len, e_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    raw[info.header_offset + 30 + n_len + e_len] ^= 0xFF
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        read_model_pt(flipped)


# ----------------------------------------------------------------------------- safetensors cache


def _write_pt(tmp_path, seed=0, name="ckpt"):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    sd = _small_state_dict(seed)
    torch.save({"state_dict": sd}, d / "model.pt")
    return d, sd


def test_convert_sharded(tmp_path):
    d, sd = _write_pt(tmp_path)
    out = convert_to_safetensors(d / "model.pt", tmp_path / "st", max_shard_bytes=200)
    index = json.loads((out / INDEX_NAME).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1
    assert files == sorted(p.name for p in out.glob("*.safetensors"))
    assert all(f.startswith("model-") and f.endswith(f"-of-{len(files):05d}.safetensors") for f in files)
    assert set(index["weight_map"]) == set(sd)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in sd.values())
    assert index["metadata"]["source_size"] == str((d / "model.pt").stat().st_size)
    loaded = load_safetensors_dir(out)
    for key, ref in sd.items():
        _assert_same(loaded[key], ref)  # dtypes kept: bf16 stays bf16
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_convert_single_file(tmp_path):
    d, sd = _write_pt(tmp_path)
    out = convert_to_safetensors(d / "model.pt", tmp_path / "st")
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    loaded = load_safetensors_dir(out)
    for key, ref in sd.items():
        _assert_same(loaded[key], ref)
    assert cache_is_fresh(out, d / "model.pt")


def test_load_checkpoint_weights_caches_and_detects_staleness(tmp_path, capfd):
    d, sd = _write_pt(tmp_path)
    cache_root = tmp_path / "cache"
    w = load_checkpoint_weights(d, cache_dir=cache_root)
    err = capfd.readouterr().err
    assert "converting" in err and err.count("\n") == 1
    for key, ref in sd.items():
        _assert_same(w[key], ref)
    target = cache_dir_for(d / "model.pt", cache_root)
    assert target.parent == cache_root and (target / "model.safetensors").is_file()

    w = load_checkpoint_weights(d, cache_dir=cache_root)
    assert capfd.readouterr().err == ""  # reused, no conversion
    assert mx.array_equal(w["enc.w"], read_model_pt(d / "model.pt")["enc.w"]).item()

    # replace model.pt with other weights: the cache is stale and gets rebuilt in place
    sd2 = _small_state_dict(seed=5)
    sd2["extra"] = torch.ones(7)
    torch.save({"state_dict": sd2}, d / "model.pt")
    st = (d / "model.pt").stat()
    os.utime(d / "model.pt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not cache_is_fresh(target, d / "model.pt")
    w = load_checkpoint_weights(d, cache_dir=cache_root)
    assert "converting" in capfd.readouterr().err
    assert set(w) == set(sd2)
    for key, ref in sd2.items():
        _assert_same(w[key], ref)
    assert [p.name for p in cache_root.iterdir()] == [target.name]


def test_cache_root_from_environment(tmp_path, monkeypatch):
    d, _ = _write_pt(tmp_path)
    monkeypatch.setenv("FUNASR_NANO_CACHE", str(tmp_path / "envcache"))
    load_checkpoint_weights(d)
    assert cache_dir_for(d / "model.pt").parent == tmp_path / "envcache"
    assert cache_is_fresh(cache_dir_for(d / "model.pt"), d / "model.pt")


def test_load_checkpoint_weights_prefers_safetensors_dir(tmp_path, capfd):
    d, sd = _write_pt(tmp_path)
    convert_to_safetensors(d / "model.pt", tmp_path / "st", max_shard_bytes=300)
    w = load_checkpoint_weights(tmp_path / "st", cache_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert capfd.readouterr().err == ""
    assert set(w) == set(sd)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither model.pt"):
        load_checkpoint_weights(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint_weights(tmp_path / "absent")


def test_load_safetensors_dir_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_safetensors_dir(tmp_path)
    (tmp_path / INDEX_NAME).write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(CheckpointError, match="missing"):
        load_safetensors_dir(tmp_path)
    (tmp_path / INDEX_NAME).write_text(json.dumps({"weight_map": {"a": "../evil.safetensors"}}))
    with pytest.raises(CheckpointError, match="invalid shard name"):
        load_safetensors_dir(tmp_path)


# ----------------------------------------------------------------------------- check_state_dict


def test_check_state_dict_reports_everything():
    expected = {"a.w": (2, 3), "a.b": (3,), "b.w": (4, 4), "c.w": (1,), "ctc.ctc_lo.weight": (5, 2)}
    weights = {"a.w": mx.zeros((3, 2)), "a.b": (3,), "zz.unknown": (1,), "ctc_decoder.x": (9,),
               "c.w": np.zeros(1)}
    with pytest.raises(CheckpointError) as info:
        check_state_dict(weights, expected)
    msg = str(info.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in msg
    assert "b.w" in msg and "zz.unknown" in msg
    assert "a.w: checkpoint [3, 2] vs model [2, 3]" in msg
    assert "ctc" not in msg  # optional prefixes may be absent or present
    check_state_dict({k: v for k, v in expected.items() if not k.startswith("ctc.")}, expected)
    check_state_dict(dict(expected), expected, optional_prefixes=())


def test_check_state_dict_truncates_long_lists():
    expected = {f"layer.{i}.w": (2,) for i in range(100)}
    with pytest.raises(CheckpointError) as info:
        check_state_dict({}, expected)
    msg = str(info.value)
    assert "100 missing" in msg and "missing (100)" in msg and "and 80 more" in msg
    assert len(msg) < 3000


def test_check_state_dict_against_synthetic(tiny_ckpt):
    funasr_cfg, qwen_cfg = get_preset("tiny")
    weights = read_model_pt(tiny_ckpt / "model.pt")
    check_state_dict(weights, expected_shapes(funasr_cfg, qwen_cfg))
    real = expected_shapes(*get_preset("real"))
    with pytest.raises(CheckpointError, match="mis-shaped"):
        check_state_dict(weights, real)


# ----------------------------------------------------------------------------- resolve_checkpoint


def test_resolve_checkpoint_local_and_errors(tmp_path, monkeypatch):
    assert resolve_checkpoint(tmp_path) == tmp_path
    (tmp_path / "model.pt").write_bytes(b"")
    assert resolve_checkpoint(tmp_path / "model.pt") == tmp_path
    with pytest.raises(CheckpointError, match="not an existing local directory"):
        resolve_checkpoint(str(tmp_path / "does" / "not" / "exist"))
    with pytest.raises(CheckpointError, match="not an existing local directory"):
        resolve_checkpoint("just-a-name")

    import huggingface_hub

    calls = []

    def offline(**kw):
        calls.append(kw)
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline and not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint("FunAudioLLM/Fun-ASR-Nano-2512", revision="abc")
    msg = str(info.value)
    assert "FunAudioLLM/Fun-ASR-Nano-2512" in msg and "Hugging Face" in msg and "offline" in msg
    assert calls[0]["repo_id"] == "FunAudioLLM/Fun-ASR-Nano-2512" and calls[0]["revision"] == "abc"
    assert "model.pt" in calls[0]["allow_patterns"] and "Qwen3-0.6B/*" in calls[0]["allow_patterns"]

    snap = tmp_path / "snap"
    snap.mkdir()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: str(snap))
    with pytest.raises(CheckpointError, match="no model.pt"):
        resolve_checkpoint("org/name")
    (snap / "model.pt").write_bytes(b"")
    assert resolve_checkpoint("org/name") == snap


# ----------------------------------------------------------------------------- synthetic checkpoints


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from funasr_nano.synthetic import write_synthetic_checkpoint

    return write_synthetic_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", preset="tiny", seed=0)


def test_synthetic_tiny_layout(tiny_ckpt):
    from funasr_nano.synthetic import MARKER, is_synthetic

    funasr_cfg, qwen_cfg = get_preset("tiny")
    for name in ["config.yaml", "configuration.json", "model.pt", MARKER, "Qwen3-0.6B/config.json",
                 "Qwen3-0.6B/tokenizer.json", "Qwen3-0.6B/tokenizer_config.json", "Qwen3-0.6B/vocab.json",
                 "Qwen3-0.6B/merges.txt"]:
        assert (tiny_ckpt / name).is_file(), name
    assert yaml.safe_load((tiny_ckpt / "config.yaml").read_text()) == funasr_cfg
    assert json.loads((tiny_ckpt / "Qwen3-0.6B" / "config.json").read_text()) == qwen_cfg
    conf = json.loads((tiny_ckpt / "configuration.json").read_text())
    assert conf["file_path_metas"] == {"init_param": "model.pt", "config": "config.yaml"}
    marker = (tiny_ckpt / MARKER).read_text()
    assert "NOT the trained" in marker and "preset: tiny" in marker and "seed: 0" in marker
    assert is_synthetic(tiny_ckpt)
    assert not is_synthetic(tiny_ckpt / "Qwen3-0.6B")

    obj = torch.load(tiny_ckpt / "model.pt", weights_only=True)
    sd = obj["state_dict"]
    want = expected_shapes(funasr_cfg, qwen_cfg)
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    assert all(v.dtype == torch.bfloat16 for v in sd.values())
    assert torch.equal(sd["llm.lm_head.weight"], sd["llm.model.embed_tokens.weight"])
    # distributions as documented
    norm = sd["audio_encoder.encoders.0.norm1.weight"].float()
    assert abs(norm.mean().item() - 1) < 0.02 and 0.03 < norm.std().item() < 0.07
    emb = sd["llm.model.embed_tokens.weight"].float()
    assert abs(emb.mean().item()) < 1e-3 and abs(emb.std().item() - 0.02) < 1e-3
    fsmn = sd["audio_encoder.encoders.0.self_attn.fsmn_block.weight"].float()
    assert 0.035 < fsmn.std().item() < 0.065

    ours = load_checkpoint_weights(tiny_ckpt, cache_dir=tiny_ckpt.parent / "cache")
    assert set(ours) == set(sd)
    for key in ["llm.lm_head.weight", "audio_encoder.encoders0.0.self_attn.linear_q_k_v.weight"]:
        _assert_same(ours[key], sd[key])


def test_synthetic_is_reproducible(tiny_ckpt, tmp_path):
    from funasr_nano.synthetic import write_synthetic_checkpoint

    again = write_synthetic_checkpoint(tmp_path / "again", preset="tiny", seed=0)
    assert (again / "model.pt").read_bytes() == (tiny_ckpt / "model.pt").read_bytes()
    a, b = read_model_pt(tiny_ckpt / "model.pt"), read_model_pt(again / "model.pt")
    assert all(mx.array_equal(a[k], b[k]).item() for k in a)

    other = write_synthetic_checkpoint(tmp_path / "other", preset="tiny", seed=1)
    c = read_model_pt(other / "model.pt")
    assert set(c) == set(a)
    assert not any(mx.array_equal(a[k], c[k]).item() for k in a)
    assert "seed: 1" in (other / "SYNTHETIC_WEIGHTS.txt").read_text()


def test_product_code_never_imports_torch(tiny_ckpt, tmp_path):
    """Reader, writer, cache and synthetic writer all work with torch made unimportable."""
    script = f"""
import sys
sys.modules["torch"] = None  # any 'import torch' now raises ImportError
from funasr_nano.checkpoint.torch_reader import read_model_pt
from funasr_nano.checkpoint.torch_writer import write_model_pt
from funasr_nano.checkpoint.cache import load_checkpoint_weights
from funasr_nano.synthetic import write_synthetic_checkpoint
import numpy as np
w = read_model_pt({str(tiny_ckpt / "model.pt")!r})
assert len(w) == 130, len(w)
write_model_pt({str(tmp_path / "w.pt")!r}, {{"a": np.ones(3, np.float32)}})
assert read_model_pt({str(tmp_path / "w.pt")!r})["a"].tolist() == [1.0, 1.0, 1.0]
c = load_checkpoint_weights({str(tiny_ckpt)!r}, cache_dir={str(tmp_path / "cache")!r})
assert len(c) == 130
print("ok")
"""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
