"""Benchmark report from an asv ``results/`` tree: ``funasr-nano report``.

Writes into ``--out`` (default ``results/report``):

* ``BENCHMARKS.md`` -- per machine, the table of its latest (or ``--commit``) run in the style of
  mlx-lm's BENCHMARKS.md: one row per precision preset with RTF / RTFx, decode ms per token /
  tokens/s, prefill ms per prompt token, peak MLX memory, weight bytes, fidelity to fp32 and
  WER/CER when measured; then batch and per-stage tables, and a footer with machine, versions,
  commit and the decode-length rule. The table is also printed.
* ``tradeoff-<machine>.png`` -- quantization trade-off: x = RTF, y = quality loss (WER/CER on real
  weights when measured, else the teacher-forced KL to fp32 on synthetic weights, or top-1
  disagreement: ``--quality``), marker area = peak memory; one point per preset.
* ``machines.png`` -- machine comparison: each machine's newest result of the current suite version,
  labelled with its commit, with a warning when the package changed between those commits in a way
  the calibration benchmark flags (`package_change_notes`); the same as a table in BENCHMARKS.md.
* ``history-<benchmark>.png`` -- a chosen benchmark over commits, one line per machine.

Every table and chart says "SYNTHETIC WEIGHTS" when the run used the synthetic checkpoint
(``meta.Context.track_synthetic_weights`` = 1, or 2 for the tiny test model, in the result file;
else the run record).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .results import ResultSet, load_results

# Benchmark names the report knows (the suite's, see benchmarks/).
B_RTF = "e2e.Transcribe.track_rtf"
B_TIME = "e2e.Transcribe.time_transcribe"
B_TOKEN = "decode.Decode.track_ms_per_token"
B_PREFILL = "decode.Prefill.track_ms_per_prompt_token"
B_PEAK = "memory.Memory.track_peak_bytes"
B_WEIGHTS = "memory.Weights.track_weight_bytes"
B_TOP1 = "fidelity.Fidelity.track_top1_disagreement"
B_KL = "fidelity.Fidelity.track_mean_kl"
B_WER = "accuracy.Accuracy.track_wer"
B_CER = "accuracy.Accuracy.track_cer"
B_LOAD = "meta.Load.time_load"
B_SYNTH = "meta.Context.track_synthetic_weights"
B_REFBLAS = "meta.Context.track_reference_blas"
B_POLICY = "meta.Policy.track_policy"
B_CALIB = "meta.Calibration.time_calibration"
CALIBRATION_FACTOR = 1.1  # a package change beyond this, after calibration, is flagged (bench compare's --factor)
STAGES = [("frontend", "stages.Frontend.time_frontend"), ("encoder", "stages.Encoder.time_encoder"),
          ("adaptor", "stages.Adaptor.time_adaptor"), ("prefill", "stages.Prefill.time_prefill"),
          ("decode step", "stages.DecodeStep.time_decode_step")]
PRESET_ORDER = ["fp32", "bf16", "fp16", "q8", "q4", "q4-llm+bf16-audio"]
DEFAULT_HISTORY = "e2e.Transcribe.track_rtf"
DEFAULT_HISTORY_PARAMS = {"preset": "fp32", "batch": 1, "seconds": 5}
TOKENS_PER_SECOND = 4  # mirrors benchmarks/common.py (the pinned decode-length rule)
SYNTH_BANNER = ("SYNTHETIC WEIGHTS (seeded random, released shapes): speed and memory are representative, "
                "fidelity compares presets on random weights, accuracy is meaningless")
TINY_BANNER = ("SYNTHETIC TINY TEST MODEL (seeded random, toy shapes): these numbers only exercise the "
               "tooling and say nothing about the real model")
WEIGHTS_TEXT = {"synthetic": "synthetic (seeded random, released shapes)", "synthetic-tiny": "synthetic tiny test model",
                "real": "real checkpoint", None: "unknown"}
CHART_NOTE = {"synthetic": "SYNTHETIC WEIGHTS (seeded random, released shapes)",
              "synthetic-tiny": "SYNTHETIC TINY TEST MODEL (toy shapes)"}


def _worst_kind(kinds) -> str | None:
    kinds = set(kinds)
    for k in ("synthetic-tiny", "synthetic", None):
        if k in kinds:
            return k
    return "real" if kinds else None


# ----- formatting ------------------------------------------------------------------------------------------
def _num(v, fmt="{:.3g}"):
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "–"
    return fmt.format(v)


def _gb(v):
    return _num(None if v is None else v / 1e9, "{:.2f}")


def _inv(v, scale=1.0):
    if v is None or not v or (isinstance(v, float) and math.isnan(v)):
        return None
    return scale / v


def _preset_key(p):
    return (PRESET_ORDER.index(p) if p in PRESET_ORDER else len(PRESET_ORDER), str(p))


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")


def _ram_gb(m: dict) -> str:
    try:
        return f"{int(m.get('ram', 0)) / 2 ** 30:.0f} GiB"
    except (TypeError, ValueError):
        return str(m.get("ram", ""))


def synthetic_label(rs: ResultSet, machine: str, commit: str) -> str:
    return WEIGHTS_TEXT[rs.weights_kind(machine, commit)]


# ----- choosing what to show -----------------------------------------------------------------------------
def pick_seconds(rs: ResultSet, machine: str, commit: str, prefer=5) -> int | None:
    counts: dict = {}
    for r in rs.select(machine=machine, commit=commit):
        s = r.params.get("seconds")
        if s is not None and r.benchmark in (B_RTF, B_TOKEN, B_PEAK, B_TOP1, B_PREFILL):
            counts[s] = counts.get(s, 0) + 1
    if not counts:
        return None
    best = max(counts.values())
    cands = sorted(s for s, n in counts.items() if n == best)
    return prefer if prefer in cands else cands[0]


def presets_in(rs: ResultSet, machine: str, commit: str) -> list:
    ps = {r.params["preset"] for r in rs.select(machine=machine, commit=commit) if "preset" in r.params}
    return sorted(ps, key=_preset_key)


def preset_rows(rs: ResultSet, machine: str, commit: str, seconds: int, batch: int = 1) -> list[dict]:
    """One dict per preset with the headline metrics (None where not measured)."""
    rows = []
    for p in presets_in(rs, machine, commit):
        def v(bench, **kw):
            return rs.value(bench, machine, commit, preset=p, **kw)

        rtf = v(B_RTF, batch=batch, seconds=seconds)
        if rtf is None:
            t = v(B_TIME, batch=batch, seconds=seconds)
            rtf = t / (batch * seconds) if t is not None else None
        tok = v(B_TOKEN, batch=batch, seconds=seconds)
        row = {
            "preset": p, "rtf": rtf, "rtfx": _inv(rtf),
            "ms_per_token": tok, "tokens_per_s": _inv(tok, 1000.0 * batch),
            "prefill_ms_per_token": v(B_PREFILL, batch=batch, seconds=seconds),
            "peak_bytes": v(B_PEAK, batch=batch, seconds=seconds),
            "weight_bytes": v(B_WEIGHTS),
            "top1_disagreement": v(B_TOP1, seconds=seconds),
            "mean_kl": v(B_KL, seconds=seconds),
            "wer": v(B_WER), "cer": v(B_CER), "load_s": v(B_LOAD),
        }
        row["prefill_tokens_per_s"] = _inv(row["prefill_ms_per_token"], 1000.0)
        if any(row[k] is not None for k in row if k != "preset"):
            rows.append(row)
    return rows


# ----- Markdown --------------------------------------------------------------------------------------------
def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _preset_table(rs: ResultSet, machine: str, commit: str, seconds) -> list[str]:
    """The main table: one row per preset at this clip length (quality columns only when measured)."""
    rows = preset_rows(rs, machine, commit, seconds) if seconds else []
    q_cols = [("wer", "WER %"), ("cer", "CER %")]
    q_cols = [(k, h) for k, h in q_cols if any(r[k] is not None for r in rows)]
    header = ["Preset", "RTF", "RTFx", "Decode ms/tok", "Decode tok/s", "Prefill ms/tok", "Prefill tok/s",
              "Peak mem GB", "Weights GB", "Top-1 disagree vs fp32", "KL vs fp32 (nats)"]
    header += [h for _, h in q_cols] + ["Load s"]
    body = []
    for r in rows:
        cells = [f"`{r['preset']}`", _num(r["rtf"], "{:.3f}"), _num(r["rtfx"], "{:.2f}"),
                 _num(r["ms_per_token"], "{:.1f}"), _num(r["tokens_per_s"], "{:.2f}"),
                 _num(r["prefill_ms_per_token"], "{:.2f}"), _num(r["prefill_tokens_per_s"], "{:.0f}"),
                 _gb(r["peak_bytes"]), _gb(r["weight_bytes"]),
                 _num(r["top1_disagreement"], "{:.3f}"), _num(r["mean_kl"], "{:.4f}")]
        cells += [_num(None if r[k] is None else 100 * r[k], "{:.2f}") for k, _ in q_cols]
        cells.append(_num(r["load_s"], "{:.1f}"))
        body.append(cells)
    return [_md_table(header, body) if body else "_No per-preset results at this commit._", ""]


def _batch_table(rs: ResultSet, machine: str, commit: str, seconds) -> list[str]:
    """RTF and tok/s by preset x batch size at this length; nothing when only one batch size ran."""
    batches = sorted({r.params["batch"] for r in rs.select(B_RTF, machine, commit, seconds=seconds)
                      if "batch" in r.params})
    if len(batches) <= 1:
        return []
    hdr = ["Preset"] + [f"RTF b={b}" for b in batches] + [f"tok/s b={b}" for b in batches]
    body = []
    for p in presets_in(rs, machine, commit):
        rtfs = [rs.value(B_RTF, machine, commit, preset=p, batch=b, seconds=seconds) for b in batches]
        toks = [rs.value(B_TOKEN, machine, commit, preset=p, batch=b, seconds=seconds) for b in batches]
        if all(x is None for x in rtfs + toks):
            continue
        body.append([f"`{p}`"] + [_num(x, "{:.3f}") for x in rtfs]
                    + [_num(_inv(t, 1000.0 * b), "{:.2f}") for t, b in zip(toks, batches)])
    if not body:
        return []
    return [f"Batch sizes ({seconds} s clips; tok/s counts every row):", "", _md_table(hdr, body), ""]


def _stage_table(rs: ResultSet, machine: str, commit: str, seconds) -> list[str]:
    """Per-stage milliseconds by preset (batch 1); nothing when no stage was measured."""
    srows = []
    for p in presets_in(rs, machine, commit):
        vals = [rs.value(b, machine, commit, preset=p, batch=1, seconds=seconds) for _, b in STAGES]
        if any(x is not None for x in vals):
            srows.append([f"`{p}`"] + [_num(None if x is None else 1000 * x, "{:.1f}") for x in vals])
    if not srows:
        return []
    return [f"Per-stage time, ms (batch 1, {seconds} s clip):", "",
            _md_table(["Preset"] + [s for s, _ in STAGES], srows), ""]


def _machine_footer(rs: ResultSet, machine: str, commit: str, kind) -> str:
    """The paragraph under the tables: the machine, its BLAS, the weights, the runs behind the numbers,
    the backend policy and what the columns mean."""
    m = rs.machines.get(machine, {})
    run = rs.run_info(machine, commit)
    blas = m.get("blas", "")
    ref_blas = rs.value(B_REFBLAS, machine, commit)
    foot = [f"Machine `{machine}`: {m.get('cpu', '?')} ({m.get('num_cpu', '?')} CPUs), {_ram_gb(m)} RAM, "
            f"GPU {m.get('gpu', '?')}" + (f" ({m['gpu_cores']} cores)" if m.get("gpu_cores") else "")
            + f"; {m.get('os', '?')}; backend {m.get('backend', '?')}, BLAS {blas or '?'}; MLX {m.get('mlx', '?')}."]
    if ref_blas:
        foot.append("**Warning: these numbers ran on the slow reference BLAS.**")
    weights = WEIGHTS_TEXT[kind]
    if run.get("checkpoint") and kind == "real":
        weights += f" `{run['checkpoint']}`"
    runs = rs.runs_of(machine, commit)
    how = ""
    if runs:
        walls = [r["wall_seconds"] for r in runs if r.get("wall_seconds")]
        how = f" ({runs[-1].get('mode', '?')} suite"
        how += (f", {len(runs)} runs, {sum(walls):.0f} s wall in total" if len(runs) > 1 else
                f", {walls[0]:.0f} s wall" if walls else "")
        how += ", uncommitted changes in the working tree" if any(r.get("dirty") for r in runs) else ""
        how += ")"
    foot.append(f"Weights: {weights}. Commit `{commit}`{how}.")
    foot.append(policy_note(rs, machine, commit, runs))
    foot.append("RTF = compute s / audio s (lower is better), RTFx = 1/RTF; decode ms/tok = marginal wall time of "
                "one greedy step of the package's decode loop; prefill ms/tok = one prefill / prompt tokens; "
                "peak mem = MLX peak during one transcription incl. weights; fidelity = teacher-forced vs fp32.")
    return " ".join(foot)


def machine_section(rs: ResultSet, machine: str, commit: str | None = None, seconds: int | None = None) -> str:
    commit = commit or rs.latest_commit(machine)
    if commit is None:
        return f"## {machine}\n\nNo results.\n"
    seconds = seconds or pick_seconds(rs, machine, commit)
    kind = rs.weights_kind(machine, commit)
    lines = [f"## {machine}", ""]
    if kind == "synthetic-tiny":
        lines += [f"> **{TINY_BANNER}.**", ""]
    elif kind == "synthetic":
        lines += [f"> **{SYNTH_BANNER}.**", ""]
    elif kind is None:
        lines += ["> Weights: unknown (no `meta.Context` result in this run).", ""]
    n = TOKENS_PER_SECOND * (seconds or 0)
    lines.append(f"Batch 1, {seconds} s clip, {n} decoded tokens (EOS ignored), commit `{commit[:8]}`.")
    lines.append("")
    lines += _preset_table(rs, machine, commit, seconds)
    lines += _batch_table(rs, machine, commit, seconds)
    lines += _stage_table(rs, machine, commit, seconds)
    lines += [_machine_footer(rs, machine, commit, kind), ""]
    return "\n".join(lines)


def policy_note(rs: ResultSet, machine: str, commit: str, runs=None) -> str:
    """The backend policy the numbers ran with: the run record's (runs.jsonl), else the values of
    the ``meta.Policy`` benchmark, else a note that this commit predates the policy."""
    for r in reversed(runs or []):
        pol = r.get("policy") or {}
        if pol.get("summary"):
            return f"Backend policy: {pol['summary']}."
    vals = {}
    for field in ("dequant_min_rows", "compiled_decode_rows", "quant_compute_bits", "encoder_eval_every"):
        v = rs.value(B_POLICY, machine, commit, field=field)
        if v is not None:
            vals[field] = v
    if vals:
        return "Backend policy (meta.Policy): " + ", ".join(f"{k} {v:g}" for k, v in vals.items()) + "."
    return "Backend policy: not recorded (a commit before funasr_nano.runtime.backend)."


def markdown_report(rs: ResultSet, machines=None, commit: str | None = None, seconds: int | None = None,
                    charts: list | None = None) -> str:
    machines = machines or rs.machine_names()
    parts = ["# funasr-nano-mlx benchmarks", "",
             "Generated by `funasr-nano report` from the asv results in `"
             + str(rs.root) + "`. Lower is better for every tracked value; RTFx and tok/s are derived.", ""]
    cmp = compare_machines(rs, machines, commit, seconds=seconds)
    if cmp is not None and len(cmp.points) > 1:
        parts.append(machines_markdown(rs, cmp))
    for mname in machines:
        c = rs.resolve_commit(commit, mname) if commit else None
        if commit and c is None:
            parts.append(f"## {mname}\n\nNo results for commit {commit}.\n")
            continue
        parts.append(machine_section(rs, mname, c, seconds))
    if charts:
        parts += ["## Charts", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in charts] + [""]
    return "\n".join(parts)


# ----- charts ------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log_if_spread(ax, values, spread: float = 20.0):
    """Log y axis when the values span more than ``spread``x (a GPU next to a 2-core CPU)."""
    vals = [v for v in values if v and v > 0]
    if vals and max(vals) / min(vals) > spread:
        ax.set_yscale("log")


def _synth_note(fig, kind: str | None):
    if kind in CHART_NOTE:
        fig.text(0.5, 0.005, CHART_NOTE[kind], ha="center", va="bottom", color="crimson", fontsize=9,
                 fontweight="bold")


def _title_tag(kind: str | None) -> str:
    return {"synthetic": " — SYNTHETIC WEIGHTS", "synthetic-tiny": " — SYNTHETIC TINY MODEL"}.get(kind, "")


def tradeoff_chart(rs: ResultSet, machine: str, out: Path, commit: str | None = None, seconds: int | None = None,
                   quality: str = "auto") -> Path | None:
    commit = commit or rs.latest_commit(machine)
    if commit is None:
        return None
    seconds = seconds or pick_seconds(rs, machine, commit)
    rows = [r for r in preset_rows(rs, machine, commit, seconds) if r["rtf"] is not None]
    if quality == "auto":
        quality = auto_quality(rs, machine, commit, rows)
    qkey = {"fidelity": "top1_disagreement", "kl": "mean_kl", "wer": "wer", "cer": "cer"}[quality]
    qlabel = {"fidelity": "top-1 disagreement with fp32 (teacher-forced)", "kl": "mean KL vs fp32 (nats)",
              "wer": "WER", "cer": "CER"}[quality]
    if not rows:
        return None
    kind = rs.weights_kind(machine, commit)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    peaks = [r["peak_bytes"] or r["weight_bytes"] or 0 for r in rows]
    pmax = max(peaks) or 1
    for r, pk in zip(rows, peaks):
        measured = r[qkey] is not None
        y = r[qkey] if measured else 0.0
        size = 80 + 900 * (pk / pmax)
        note = ""
        if not measured:  # the fp32 reference is 0 by definition; others are simply not measured
            note = " (reference)" if r["preset"] == "fp32" and quality in ("fidelity", "kl") else " (not measured)"
        ax.scatter([r["rtf"]], [y], s=size, alpha=0.55 if measured else 0.9, edgecolors="k",
                   facecolors=None if measured else "none", linewidths=1.0)
        mem = f"{pk / 1e9:.2f} GB" if pk else "mem n/a"
        ax.annotate(f"{r['preset']}{note}\n{mem}", (r["rtf"], y), textcoords="offset points", xytext=(8, 6),
                    fontsize=8)
    ax.set_xlabel("RTF (compute s / audio s, lower is faster)")
    ax.set_ylabel(qlabel + " (lower is better)")
    ax.set_title(f"Quantization trade-off — {machine}\ncommit {commit[:8]}, batch 1, {seconds} s clip; "
                 f"marker area = peak MLX memory" + _title_tag(kind), fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    _synth_note(fig, kind)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = out / f"tradeoff-{_slug(machine)}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def auto_quality(rs: ResultSet, machine: str, commit: str, rows: list) -> str:
    """WER/CER when measured on real weights; else the KL to fp32 on synthetic weights (random
    logits are near-ties, so top-1 agreement mostly measures noise there); else top-1."""
    kind = rs.weights_kind(machine, commit)
    if kind == "real":
        for q in ("wer", "cer"):
            if sum(r[q] is not None for r in rows) >= 2:
                return q
        return "fidelity"
    return "kl" if any(r["mean_kl"] is not None for r in rows) else "fidelity"


def suite_version(rs: ResultSet, benchmark: str) -> str | None:
    """The benchmark's version in ``benchmarks.json`` (the suite as last run here), else that of its
    newest result. asv stores it with every result (``common.SUITE_VERSION`` for this suite)."""
    v = rs.benchmarks.get(benchmark, {}).get("version")
    if v is not None:
        return str(v)
    recs = rs.select(benchmark)
    return max(recs, key=lambda r: r.started_at or 0).version if recs else None


def comparison_points(rs: ResultSet, benchmark: str, machines, commit: str | None = None,
                      version: str | None = None) -> dict:
    """machine -> the commit whose results it is compared with: its newest result (by measurement
    time) of ``benchmark`` at suite version ``version`` (default `suite_version`), or ``commit``."""
    version = version or suite_version(rs, benchmark)
    out = {}
    for m in machines:
        recs = [r for r in rs.select(benchmark, m) if version is None or r.version in (None, version)]
        if commit:
            recs = [r for r in recs if r.commit == commit]
        if recs:
            out[m] = max(recs, key=lambda r: r.started_at or r.date or 0).commit
    return out


def _commit_dates(rs: ResultSet) -> dict:
    return {r.commit: r.date or 0 for r in rs.records}


def package_change_notes(rs: ResultSet, points: dict, benchmark: str, presets, batch: int, seconds,
                         factor: float = CALIBRATION_FACTOR) -> list[dict]:
    """Whether the package changed between the commits being compared, judged on every machine that
    measured both commits: the benchmark's ratio between them divided by the calibration
    benchmark's ratio (``meta.Calibration``: MLX GEMM + GEMV using no model code, so it moves with
    the machine, its load, MLX and the BLAS) is the package's own change. One note per pair of commits:
    ``level`` "warning" (beyond ``factor`` on some machine), "checked" (within it) or "unchecked"
    (no machine has both commits with the calibration)."""
    dates = _commit_dates(rs)
    commits = sorted(set(points.values()), key=lambda c: (dates.get(c, 0), c))
    notes = []
    for i, a in enumerate(commits):
        for b in commits[i + 1:]:
            at = [m for m, c in points.items() if c == a]
            bt = [m for m, c in points.items() if c == b]
            flagged, checked = [], []
            for m in rs.machine_names():
                ca, cb = rs.value(B_CALIB, m, a), rs.value(B_CALIB, m, b)
                if not ca or not cb:
                    continue
                for p in presets:
                    va = rs.value(benchmark, m, a, preset=p, batch=batch, seconds=seconds)
                    vb = rs.value(benchmark, m, b, preset=p, batch=batch, seconds=seconds)
                    if not va or not vb:
                        continue
                    raw, cal = vb / va, cb / ca
                    row = {"machine": m, "preset": p, "raw": raw, "calibration": cal, "adjusted": raw / cal}
                    (flagged if max(raw / cal, cal / raw) > factor else checked).append(row)
            pair = f"`{a[:8]}` ({', '.join(at)}) and `{b[:8]}` ({', '.join(bt)})"
            rows = flagged + checked
            seen = []
            for m in dict.fromkeys(r["machine"] for r in rows):
                mr = sorted((r for r in rows if r["machine"] == m), key=lambda r: _preset_key(r["preset"]))
                seen.append(f"on {m} {a[:8]} → {b[:8]}: " + ", ".join(f"`{r['preset']}` x{r['raw']:.2f}" for r in mr)
                            + f", calibration x{mr[0]['calibration']:.2f}")
            if flagged:
                text = (f"WARNING: the package changed between {pair}: " + "; ".join(seen)
                        + f". A ratio that differs from the calibration's by more than x{factor} is the package's "
                        "own change, so the machines' gap includes it.")
                if any(max(r["calibration"], 1 / r["calibration"]) > factor for r in flagged):
                    text += (" (The calibration itself moved: machine load, MLX or the BLAS changed between the "
                             "runs; funasr_nano's BLAS set-up is part of the package.)")
                notes.append({"level": "warning", "a": a, "b": b, "text": text, "rows": rows})
            elif checked:
                text = (f"Checked {pair}: " + "; ".join(seen) + f": within x{factor} of the calibration, so no "
                        "package change shows between them.")
                notes.append({"level": "checked", "a": a, "b": b, "text": text, "rows": rows})
            else:
                text = (f"Unchecked: no machine measured both {pair} (with the calibration benchmark), so "
                        f"the machines' gap may include package changes between those commits.")
                notes.append({"level": "unchecked", "a": a, "b": b, "text": text, "rows": []})
    notes.sort(key=lambda n: ["warning", "unchecked", "checked"].index(n["level"]))
    return notes


@dataclass
class MachineComparison:
    benchmark: str
    batch: int
    seconds: int | None
    version: str | None
    points: dict        # machine -> commit
    presets: list
    values: dict        # (machine, preset) -> value or None
    notes: list         # package_change_notes()
    missing: list       # machines without a result at this suite version (or at ``commit``)
    commit: str | None = None

    def label(self, machine: str) -> str:
        return f"{machine} @ {self.points[machine][:8]}"


def compare_machines(rs: ResultSet, machines=None, commit: str | None = None, benchmark: str = B_RTF,
                     batch: int = 1, seconds: int | None = None,
                     factor: float = CALIBRATION_FACTOR) -> MachineComparison | None:
    """Each machine's newest result of ``benchmark`` at the current suite version (or all at
    ``commit``), the presets they share at one clip length, and the package-change notes."""
    machines = machines or rs.machine_names()
    commit = rs.resolve_commit(commit) if commit else None
    version = suite_version(rs, benchmark)
    points = comparison_points(rs, benchmark, machines, commit, version)
    if not points:
        return None
    if seconds is None:
        counts: dict = {}
        for m, c in points.items():
            for r in rs.select(benchmark, m, c, batch=batch):
                counts[r.params.get("seconds")] = counts.get(r.params.get("seconds"), 0) + 1
        counts.pop(None, None)
        seconds = (5 if counts.get(5) == max(counts.values()) else max(counts, key=counts.get)) if counts else None
    presets = sorted({r.params.get("preset") for m, c in points.items() for r in rs.select(benchmark, m, c)
                      if r.params.get("seconds") == seconds and r.params.get("batch", batch) == batch},
                     key=_preset_key)
    values = {(m, p): rs.value(benchmark, m, c, preset=p, batch=batch, seconds=seconds)
              for m, c in points.items() for p in presets}
    notes = package_change_notes(rs, points, benchmark, presets, batch, seconds, factor)
    missing = [m for m in machines if m not in points]
    return MachineComparison(benchmark, batch, seconds, version, points, presets, values, notes, missing, commit)


def machines_markdown(rs: ResultSet, cmp: MachineComparison) -> str:
    unit = rs.benchmarks.get(cmp.benchmark, {}).get("unit", "")
    dates = {}
    for m, c in cmp.points.items():
        started = [r.started_at for r in rs.select(cmp.benchmark, m, c) if r.started_at]
        dates[m] = time.strftime("%Y-%m-%d", time.gmtime(max(started) / 1000)) if started else "?"
    header = ["Machine", "Commit", "Measured"] + [f"`{p}`" for p in cmp.presets] + ["Calibration ms"]
    body = []
    for m, c in cmp.points.items():
        cal = rs.value(B_CALIB, m, c)
        body.append([m, f"`{c[:8]}`", dates[m]] + [_num(cmp.values[(m, p)], "{:.3g}") for p in cmp.presets]
                    + [_num(None if cal is None else 1000 * cal, "{:.3g}")])
    lines = ["## Machines compared", "",
             f"`{cmp.benchmark}` [{unit}], batch {cmp.batch}, {cmp.seconds} s clip: "
             + (f"every machine at commit `{cmp.commit[:8]}`" if cmp.commit else
                f"each machine's newest result at suite version {cmp.version}, labelled with its commit")
             + f". Calibration: `{B_CALIB}`, an MLX workload using no model code (it measures the machine, "
             "MLX and the BLAS).", "",
             _md_table(header, body), ""]
    for n in cmp.notes:
        lines.append(("> **" + n["text"] + "**") if n["level"] == "warning" else "> " + n["text"])
        lines.append("")
    if cmp.missing:
        where = f"commit {cmp.commit[:8]}" if cmp.commit else f"suite version {cmp.version}"
        lines += [f"Not compared (no `{cmp.benchmark}` result at {where}): " + ", ".join(cmp.missing) + ".", ""]
    return "\n".join(lines)


def machines_chart(rs: ResultSet, out: Path, machines=None, commit: str | None = None, benchmark: str = B_RTF,
                   batch: int = 1, seconds: int | None = None, cmp: MachineComparison | None = None) -> Path | None:
    cmp = cmp or compare_machines(rs, machines, commit, benchmark, batch, seconds)
    if cmp is None or not cmp.presets:
        return None
    have, presets = list(cmp.points), cmp.presets
    plt = _plt()
    warn = [n for n in cmp.notes if n["level"] != "checked"]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(presets) * max(1, len(have)) / 2 + 3), 4.8 + 0.3 * len(warn)))
    width = 0.8 / len(have)
    kinds = []
    for i, m in enumerate(have):
        vals = [cmp.values[(m, p)] for p in presets]
        k = rs.weights_kind(m, cmp.points[m])
        kinds.append(k)
        xs = [j + (i - (len(have) - 1) / 2) * width for j in range(len(presets))]
        label = cmp.label(m) + ({"synthetic": " (synthetic)", "synthetic-tiny": " (synthetic tiny)"}.get(k, ""))
        ax.bar(xs, [v if v is not None else 0 for v in vals], width, label=label)
        for x, v in zip(xs, vals):
            if v is not None:
                ax.annotate(f"{v:.3g}", (x, v), ha="center", va="bottom", fontsize=7)
    unit = rs.benchmarks.get(benchmark, {}).get("unit", "")
    _log_if_spread(ax, [v for v in cmp.values.values() if v])
    ax.set_xticks(range(len(presets)), presets)
    ax.set_ylabel(f"{benchmark.rsplit('.', 1)[-1]} [{unit}] (lower is better)")
    kind = _worst_kind(kinds)
    commits = set(cmp.points.values())
    where = (f"at commit {next(iter(commits))[:8]}" if len(commits) == 1
             else f"each at its newest result (suite version {cmp.version})")
    ax.set_title(f"Machines {where} — batch {batch}, {cmp.seconds} s clip" + _title_tag(kind), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    bottom = 0.035
    for n in warn:  # package changes between the compared commits: flagged, or not checkable
        short = (f"package changed between {n['a'][:8]} and {n['b'][:8]} (calibration-adjusted, see BENCHMARKS.md)"
                 if n["level"] == "warning" else
                 f"{n['a'][:8]} vs {n['b'][:8]}: package change not checked (no machine measured both)")
        fig.text(0.5, bottom, ("WARNING: " if n["level"] == "warning" else "note: ") + short, ha="center",
                 va="bottom", fontsize=8, color="darkorange" if n["level"] == "warning" else "dimgray")
        bottom += 0.04
    _synth_note(fig, kind)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    path = out / "machines.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def history_chart(rs: ResultSet, out: Path, benchmark: str = DEFAULT_HISTORY, params: dict | None = None,
                  machines=None) -> Path | None:
    params = dict(DEFAULT_HISTORY_PARAMS if params is None else params)
    meta = rs.benchmarks.get(benchmark, {})
    names = meta.get("param_names")
    if names is not None:
        params = {k: v for k, v in params.items() if k in names}
    machines = machines or rs.machine_names()
    series = {}
    for m in machines:
        pts = []
        for commit, date in rs.commits(m):
            v = rs.value(benchmark, m, commit, **params)
            if v is not None:
                recs = rs.select(benchmark, m, commit, **params)
                st = recs[-1].stats if recs else {}
                pts.append((date, commit, v, st.get("q_25"), st.get("q_75"), rs.weights_kind(m, commit)))
        if pts:
            series[m] = pts
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    order = sorted({(p[0], p[1]) for pts in series.values() for p in pts})
    xpos = {c: i for i, (_, c) in enumerate(order)}
    kinds = []
    for m, pts in series.items():
        xs = [xpos[p[1]] for p in pts]
        ys = [p[2] for p in pts]
        lo = [max(0.0, p[2] - p[3]) if p[3] is not None else 0 for p in pts]
        hi = [max(0.0, p[4] - p[2]) if p[4] is not None else 0 for p in pts]
        k = _worst_kind(p[5] for p in pts)
        kinds.append(k)
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3,
                    label=m + ({"synthetic": " (synthetic)", "synthetic-tiny": " (synthetic tiny)"}.get(k, "")))
    _log_if_spread(ax, [p[2] for pts in series.values() for p in pts])
    ax.set_xticks(range(len(order)), [c[:8] for _, c in order], rotation=45, ha="right", fontsize=8)
    unit = meta.get("unit", "")
    ax.set_ylabel(f"{unit} (lower is better)")
    ptxt = ", ".join(f"{k}={v}" for k, v in params.items())
    kind = _worst_kind(kinds)
    ax.set_title(f"History of {benchmark} ({ptxt})" + _title_tag(kind), fontsize=9)
    ax.set_xlabel("commit (by commit date)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _synth_note(fig, kind)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = out / f"history-{_slug(benchmark)}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_params(s: str | None) -> dict | None:
    """``preset=fp32,batch=1,seconds=10`` -> dict (numbers converted)."""
    if not s:
        return None
    out = {}
    for part in s.split(","):
        if not part.strip():
            continue
        k, _, v = part.partition("=")
        v = v.strip()
        try:
            out[k.strip()] = int(v)
        except ValueError:
            try:
                out[k.strip()] = float(v)
            except ValueError:
                out[k.strip()] = v
    return out


def build_report(results_dir, out_dir, machines=None, commit=None, seconds=None, quality="auto",
                 history=DEFAULT_HISTORY, history_params=None, charts=True) -> dict:
    """Write BENCHMARKS.md (+ PNGs); returns {"markdown", "charts": [paths], "table": path, "results"}."""
    rs = load_results(results_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machines = machines or rs.machine_names()
    paths = []
    if charts:
        for m in machines:
            c = rs.resolve_commit(commit, m) if commit else None
            p = tradeoff_chart(rs, m, out, c, seconds, quality)
            if p:
                paths.append(p)
        p = machines_chart(rs, out, machines, commit, seconds=seconds)
        if p:
            paths.append(p)
        p = history_chart(rs, out, history, history_params, machines)
        if p:
            paths.append(p)
    md = markdown_report(rs, machines, commit, seconds, paths)
    table = out / "BENCHMARKS.md"
    table.write_text(md, encoding="utf-8")
    return {"markdown": md, "charts": paths, "table": table, "results": rs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="funasr-nano report",
                                description="Markdown table and PNG charts from an asv results/ tree.")
    p.add_argument("--results", default="results", help="asv results directory (default: results)")
    p.add_argument("--out", default=None, help="output directory (default: <results>/report)")
    p.add_argument("--machine", action="append", default=None, help="machine(s) to report (default: all)")
    p.add_argument("--commit", default=None, help="commit (prefix) for the tables (default: latest per machine)")
    p.add_argument("--seconds", type=int, default=None, help="audio length of the tables (default: the length measured most, 5 s on ties)")
    p.add_argument("--quality", choices=["auto", "fidelity", "kl", "wer", "cer"], default="auto",
                   help="y axis of the trade-off chart: fidelity = top-1 disagreement with fp32, kl = mean KL "
                        "to fp32, wer/cer; auto (default): WER/CER on real weights when measured, KL on "
                        "synthetic weights")
    p.add_argument("--history", default=DEFAULT_HISTORY, help=f"benchmark of the history chart ({DEFAULT_HISTORY})")
    p.add_argument("--history-params", default=None,
                   help="its parameters, e.g. preset=q4,batch=1,seconds=10 (default preset=fp32,batch=1,seconds=5)")
    p.add_argument("--no-charts", action="store_true", help="only the Markdown table")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    args = p.parse_args(argv)
    out = args.out or str(Path(args.results) / "report")
    try:
        rep = build_report(args.results, out, args.machine, args.commit, args.seconds, args.quality,
                           args.history, parse_params(args.history_params), not args.no_charts)
    except (FileNotFoundError, ValueError) as e:
        print(f"funasr-nano report: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(rep["markdown"])
    print(f"table:  {rep['table']}")
    for c in rep["charts"]:
        print(f"chart:  {c}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
