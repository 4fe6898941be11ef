"""Small local datasets in the real sets' exact column schemas, for tests and offline checks.

* `write_librispeech_snapshot`: a folder laid out like a download of ``openslr/librispeech_asr``
  (README with ``configs:``, ``clean/test/*.parquet``, ``other/test/*.parquet``), columns ``file``,
  ``audio`` (FLAC bytes + path), ``text`` (upper case), ``speaker_id``, ``chapter_id``, ``id``. Point
  ``$FUNASR_NANO_EVAL_MIRROR/librispeech-test-clean`` (or ``--data-path``) at it.
* `write_aishell_folder`: AISHELL-1's own form, WAV files named by utterance id plus a ``metadata.csv``
  (``file_name,transcription``) holding the word-segmented transcripts.
* `write_aishell_parquet`: the hub mirror's form, ``audio`` + ``transcription`` columns.

The audio is tones and noise (or whatever `audio_fn` returns), not speech.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

LIBRISPEECH_ROWS = [
    (1089, 134686, 0, "HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS"),
    (1089, 134686, 1, "STUFF IT INTO YOU HIS BELLY COUNSELLED HIM"),
    (1089, 134686, 2, "AFTER EARLY NIGHTFALL THE YELLOW LAMPS WOULD LIGHT UP HERE AND THERE"),
    (121, 121726, 0, "ALSO A POPULAR CONTRIVANCE WHEREBY LOVE MAKING MAY BE SUSPENDED"),
]
AISHELL_ROWS = [
    ("BAC009S0764W0121", "甚至 出现 交易 几乎 停滞 的 情况"),
    ("BAC009S0764W0122", "一二 线 城市 虽然 也 处于 调整 中"),
    ("BAC009S0764W0123", "但 因为 聚集 了 过多 公共 资源"),
]


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.shape[0])
    return x.astype(np.float32)


def _encode(x: np.ndarray, rate: int, fmt: str) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def _write_parquet(path: Path, columns: dict, features: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns).replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


_STR = {"_type": "Value", "dtype": "string"}
_I64 = {"_type": "Value", "dtype": "int64"}


def librispeech_table(rows=LIBRISPEECH_ROWS, seconds=(1.0, 1.3, 1.6, 1.2), rate: int = 16000,
                      audio_fn=None) -> tuple[dict, dict]:
    cols = {"file": [], "audio": [], "text": [], "speaker_id": [], "chapter_id": [], "id": []}
    for k, (spk, chap, utt, text) in enumerate(rows):
        uid = f"{spk}-{chap}-{utt:04d}"
        x = audio_fn(k) if audio_fn else tone(seconds[k % len(seconds)], rate, 200.0 + 40 * k, k)
        name = f"{uid}.flac"
        cols["file"].append(name)
        cols["audio"].append({"bytes": _encode(x, rate, "FLAC"), "path": name})
        cols["text"].append(text)
        cols["speaker_id"].append(spk)
        cols["chapter_id"].append(chap)
        cols["id"].append(uid)
    feats = {"file": _STR, "audio": {"_type": "Audio", "sampling_rate": rate}, "text": _STR,
             "speaker_id": _I64, "chapter_id": _I64, "id": _STR}
    return cols, feats


def write_librispeech_snapshot(root, rows=LIBRISPEECH_ROWS, rate: int = 16000, audio_fn=None) -> Path:
    """A local folder shaped like a snapshot of ``openslr/librispeech_asr`` (configs clean / other)."""
    root = Path(root)
    cols, feats = librispeech_table(rows, rate=rate, audio_fn=audio_fn)
    lines = ["---", "configs:"]
    for cfg in ("clean", "other"):
        _write_parquet(root / cfg / "test" / "0000.parquet", cols, feats)
        # Another split of the same config, as on the hub (train.100 / validation ...): not a valid
        # parquet file, so a loader that prepares every split of the config fails on it.
        (root / cfg / "validation").mkdir(parents=True, exist_ok=True)
        (root / cfg / "validation" / "0000.parquet").write_bytes(b"not parquet: only the test split is read")
        lines += [f"- config_name: {cfg}", "  data_files:", "  - split: test", f"    path: {cfg}/test/*.parquet",
                  "  - split: validation", f"    path: {cfg}/validation/*.parquet"]
    lines += ["---", "Local stand-in for openslr/librispeech_asr (tones, not speech).", ""]
    (root / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return root


def write_aishell_folder(root, rows=AISHELL_ROWS, seconds=(1.0, 1.4, 1.2), rate: int = 16000,
                         audio_fn=None) -> Path:
    """WAV files named by AISHELL utterance id + metadata.csv (file_name, transcription)."""
    import soundfile as sf

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "transcription"])
        for k, (uid, text) in enumerate(rows):
            x = audio_fn(k) if audio_fn else tone(seconds[k % len(seconds)], rate, 300.0 + 50 * k, 10 + k)
            sf.write(root / f"{uid}.wav", x, rate, subtype="PCM_16")
            w.writerow([f"{uid}.wav", text])
    return root


def write_aishell_parquet(path, rows=AISHELL_ROWS, seconds=(1.0, 1.4, 1.2), rate: int = 16000,
                          audio_fn=None) -> Path:
    """One parquet file in the hub mirror's schema: ``audio`` (WAV bytes, path = <id>.wav) + ``transcription``."""
    cols = {"audio": [], "transcription": []}
    for k, (uid, text) in enumerate(rows):
        x = audio_fn(k) if audio_fn else tone(seconds[k % len(seconds)], rate, 300.0 + 50 * k, 10 + k)
        cols["audio"].append({"bytes": _encode(x, rate, "WAV"), "path": f"{uid}.wav"})
        cols["transcription"].append(text)
    return _write_parquet(Path(path), cols, {"audio": {"_type": "Audio", "sampling_rate": rate},
                                             "transcription": _STR})
