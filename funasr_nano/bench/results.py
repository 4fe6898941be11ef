"""Read an asv ``results/`` tree (asv 0.6 result format v2) into flat records.

Layout (asv): ``results/benchmarks.json`` (benchmark metadata: params, units, types),
``results/<machine>/machine.json`` and one ``results/<machine>/<commit[:8]>-<env>.json`` per
commit and environment. Beside them this project writes ``results/<machine>/runs.jsonl``: one JSON
object per suite run (checkpoint, synthetic flag, BLAS, versions, mode), appended by
``funasr-nano bench``; asv ignores it (asv only reads ``*.json``).

Only the standard library is needed; no asv import (the reader works on stored files anywhere).
"""

from __future__ import annotations

import ast
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

RUNS_FILE = "runs.jsonl"
STAT_COLUMNS = ("stats_ci_99_a", "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat")


def _param_value(s):
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError):
        return s


@dataclass
class Record:
    machine: str
    commit: str
    env: str
    date: int                   # commit date (ms since epoch), as asv stores it
    benchmark: str              # e.g. "e2e.Transcribe.track_rtf"
    params: dict                # {"preset": "fp32", "batch": 1, "seconds": 10}
    value: float | None         # None: failed; nan: skipped / not run
    unit: str = ""
    type: str = ""
    stats: dict = field(default_factory=dict)
    samples: list | None = None
    started_at: int | None = None
    version: str | None = None  # the benchmark's version (asv: its `version` attribute or code hash)

    @property
    def ok(self) -> bool:
        return self.value is not None and not (isinstance(self.value, float) and math.isnan(self.value))


@dataclass
class ResultSet:
    root: Path
    records: list
    machines: dict              # name -> machine.json contents
    benchmarks: dict            # name -> benchmarks.json entry
    runs: dict                  # machine -> list of runs.jsonl records

    def ok(self):
        return [r for r in self.records if r.ok]

    def machine_names(self) -> list[str]:
        return sorted({r.machine for r in self.records} | set(self.machines))

    def commits(self, machine: str | None = None) -> list[tuple[str, int]]:
        """(commit, commit date) with at least one successful value, oldest first."""
        dates: dict = {}
        for r in self.ok():
            if machine is None or r.machine == machine:
                dates[r.commit] = r.date or 0
        return sorted(dates.items(), key=lambda kv: (kv[1], kv[0]))

    def latest_commit(self, machine: str | None = None) -> str | None:
        """The commit whose results were produced last (by benchmark start time) on the machine."""
        best, when = None, -1
        for r in self.ok():
            if machine is None or r.machine == machine:
                t = r.started_at or r.date or 0
                if t > when:
                    best, when = r.commit, t
        return best

    def resolve_commit(self, prefix: str, machine: str | None = None) -> str | None:
        hits = {r.commit for r in self.records if r.commit.startswith(prefix)
                and (machine is None or r.machine == machine)}
        if len(hits) > 1:
            raise ValueError(f"commit prefix {prefix!r} is ambiguous: {sorted(hits)}")
        return hits.pop() if hits else None

    def select(self, benchmark: str | None = None, machine: str | None = None, commit: str | None = None,
               **params) -> list:
        out = []
        for r in self.ok():
            if benchmark is not None and r.benchmark != benchmark:
                continue
            if machine is not None and r.machine != machine:
                continue
            if commit is not None and r.commit != commit:
                continue
            if any(k not in r.params or r.params[k] != v for k, v in params.items()):
                continue
            out.append(r)
        return out

    def value(self, benchmark: str, machine: str, commit: str, **params):
        """The single value matching exactly, or None. With several environments, the latest run wins."""
        rs = self.select(benchmark, machine, commit, **params)
        if not rs:
            return None
        return max(rs, key=lambda r: r.started_at or 0).value

    def weights_kind(self, machine: str, commit: str) -> str | None:
        """``"real"``, ``"synthetic"`` (released shapes), ``"synthetic-tiny"`` or None (unknown): the
        ``meta.Context.track_synthetic_weights`` value, else the runs.jsonl record of that commit."""
        v = self.value("meta.Context.track_synthetic_weights", machine, commit)
        if v is not None:
            return "real" if v < 0.5 else "synthetic" if v < 1.5 else "synthetic-tiny"
        for run in reversed(self.runs.get(machine, [])):
            if str(run.get("commit", "")).startswith(commit[:8]) and "synthetic" in run:
                return "synthetic" if run["synthetic"] else "real"
        return None

    def synthetic(self, machine: str, commit: str) -> bool | None:
        """Whether the run used synthetic weights (None when unknown)."""
        k = self.weights_kind(machine, commit)
        return None if k is None else k != "real"

    def runs_of(self, machine: str, commit: str) -> list:
        """runs.jsonl records of that commit on that machine, oldest first."""
        return [r for r in self.runs.get(machine, []) if str(r.get("commit", "")).startswith(commit[:8])]

    def run_info(self, machine: str, commit: str) -> dict:
        for run in reversed(self.runs.get(machine, [])):
            if str(run.get("commit", "")).startswith(commit[:8]):
                return run
        return {}


def _load_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _records_from_file(path: Path, machine: str, benchmarks: dict) -> list:
    d = _load_json(path)
    if not isinstance(d, dict) or "results" not in d:
        return []
    cols = d.get("result_columns") or ["result", "params", "version", "started_at", "duration"]
    commit, env, date = d.get("commit_hash", ""), d.get("env_name", ""), d.get("date") or 0
    machine = (d.get("params") or {}).get("machine", machine)
    out = []
    for name, row in d["results"].items():
        row = dict(zip(cols, row))
        meta = benchmarks.get(name, {})
        param_lists = row.get("params") or []
        names = meta.get("param_names") or [f"param{i + 1}" for i in range(len(param_lists))]
        values = row.get("result")
        if not isinstance(values, list):
            values = [values]
        combos = list(itertools.product(*param_lists)) if param_lists else [()]
        for i, combo in enumerate(combos):
            v = values[i] if i < len(values) else math.nan
            stats = {}
            for col in STAT_COLUMNS:
                arr = row.get(col)
                if isinstance(arr, list) and i < len(arr) and arr[i] is not None:
                    stats[col[len("stats_"):]] = arr[i]
            samples = row.get("samples")
            samples = samples[i] if isinstance(samples, list) and i < len(samples) else None
            out.append(Record(machine=machine, commit=commit, env=env, date=date, benchmark=name,
                              params={n: _param_value(p) for n, p in zip(names, combo)},
                              value=(float(v) if v is not None else None), unit=meta.get("unit", ""),
                              type=meta.get("type", ""), stats=stats, samples=samples,
                              started_at=row.get("started_at"), version=row.get("version")))
    return out


def load_results(results_dir) -> ResultSet:
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no asv results directory at {root}")
    bpath = root / "benchmarks.json"
    benchmarks = _load_json(bpath) if bpath.is_file() else {}
    benchmarks = {k: v for k, v in benchmarks.items() if isinstance(v, dict)}
    records, machines, runs = [], {}, {}
    for mdir in sorted(p for p in root.iterdir() if p.is_dir()):
        mfile = mdir / "machine.json"
        if not mfile.is_file():
            continue
        minfo = _load_json(mfile)
        name = minfo.get("machine", mdir.name)
        machines[name] = minfo
        for f in sorted(mdir.glob("*.json")):
            if f.name in ("machine.json", "benchmarks.json"):
                continue
            try:
                records += _records_from_file(f, name, benchmarks)
            except (ValueError, OSError):
                continue
        rfile = mdir / RUNS_FILE
        if rfile.is_file():
            lines = rfile.read_text(encoding="utf-8").splitlines()
            runs[name] = [json.loads(line) for line in lines if line.strip().startswith("{")]
    return ResultSet(root, records, machines, benchmarks, runs)
