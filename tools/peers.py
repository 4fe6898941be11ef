"""This project beside the other Fun-ASR-Nano runtimes: same weights, same clip, same pinned tokens.

    python tools/peers.py [--model DIR] [--seconds 10] [--tokens 40] [--repeats 3] [--device cpu|cuda]
        [--rows funasr --rows project:q4 ...] [--memory-budget-gb 12] [--json F] [--md F]
    python tools/peers.py --setup            # create / reuse the peers' virtualenvs (pinned), then exit
    python tools/peers.py --list             # the rows and where each peer's interpreter comes from
    python tools/peers.py --prepare          # write the peers' checkpoint forms (cached), then exit

Every row converts the same checkpoint (default: the real-shaped synthetic model, seeded random
weights) into its runtime's own form with that runtime's own converter where one exists
(tools/peerkit/forms.py), runs in a long-lived worker process inside the runtime's environment
(tools/peerkit/worker.py) that loads the model once, and transcribes the same clip with the same
pinned number of new tokens (EOS ignored or masked: each row's ``eos`` note says how). Rows are
grouped to a memory budget; within a group all workers are loaded, each runs one warm-up, then
the timed runs go round the group ``--repeats`` times (A B C ... A B C ...). The reference row
(official funasr, fp32) is part of every group, so each row also has a ratio to the reference measured
in the same rounds. A row that cannot run gets its exact reason instead of numbers.

Columns (median and min-max over the timed runs): end-to-end s (samples in, tokens and text out),
RTFx (audio s / end-to-end s), encoder+adaptor ms, prefill ms (prompt through the decoder to the
first new token), ms per token (the decode steps after the first token), decode tokens/s, peak memory
(each runtime's own counter: MLX peak memory, torch.cuda.max_memory_allocated, or on a CPU the
process's RSS high-water mark for PyTorch rows), the first token index where the row's ids differ
from the reference row's (random weights: near-ties make late differences normal; "=" means all N
agree), prompt tokens, and the end-to-end speed-up over the reference within the same group.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import queue
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
for _p in (str(REPO),):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from tools.peerkit.rows import (BEST_PRESET, ENVS, UNRUNNABLE, Row, resolve_interp, rows_for,  # noqa: E402
                          select_rows, setup_env)

REFERENCE = "funasr:fp32"
METRICS = ("e2e_s", "rtfx", "encoder_ms", "prefill_ms", "ms_per_token", "tokens_per_s", "peak_mb", "first_diff")


def cache_root() -> Path:
    from funasr_nano.paths import cache_root as root

    return root()


# -------------------------------------------------------------------------------------------------
# checkpoint, clip, forms


def default_checkpoint() -> Path:
    from funasr_nano.synthetic import ensure_synthetic

    return ensure_synthetic("real", 0, progress=print)


def weights_text(ckpt: Path) -> str:
    """The weights label: synthetic checkpoints say so (funasr_nano.synthetic's marker, or the
    reference harness's seeded-weights metadata)."""
    from compare_reference import weights_label

    meta = ckpt / "reference_meta.json"
    if meta.is_file() and not (ckpt / "SYNTHETIC_WEIGHTS.txt").is_file():
        m = json.loads(meta.read_text(encoding="utf-8"))
        return (f"synthetic weights (seeded random, reference harness '{m.get('preset')}' shapes, "
                f"seed {m.get('seed')})")
    return weights_label(ckpt)


def checkpoint_key(ckpt: Path) -> str:
    st = (ckpt / "model.pt").stat()
    h = hashlib.sha256(f"{ckpt.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return f"{ckpt.name}-{h}"


def ensure_form(form: str, ckpt: Path, interp, forms_root: Path, log) -> Path:
    """The peer's form of `ckpt` (written once with the peer's python, reused afterwards)."""
    if form == "official":
        return ckpt
    dst = forms_root / checkpoint_key(ckpt) / form
    if (dst / ".complete").exists():
        return dst
    tmp = dst.parent / (dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log(f"[peers] writing form {form} -> {dst}")
    t = time.perf_counter()
    env = worker_env(interp)
    try:
        r = subprocess.run([interp.python, str(TOOLS / "peerkit" / "forms.py"), form, str(ckpt), str(tmp)],
                           env=env, capture_output=True, text=True)
    except OSError as e:
        raise RuntimeError(f"conversion to {form} failed: {e}") from e
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"conversion to {form} failed: " + " / ".join(x.strip() for x in tail))
    (tmp / ".complete").write_text(f"from {ckpt}\n")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    log(f"[peers] form {form} written in {time.perf_counter() - t:.1f} s")
    return dst


def worker_env(interp) -> dict:
    env = dict(os.environ)
    parts = [*interp.pythonpath, str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    # nothing may reach for the hub: every form is local (mlx-audio imports a codec that downloads)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false")
    return env


# -------------------------------------------------------------------------------------------------
# workers


class Worker:
    """One row's process. Replies are read by a thread into a queue, so a hung runtime is cut off
    by the request timeout instead of hanging the tool."""

    def __init__(self, row: Row, interp, form: Path, device: str, log_dir: Path, opts: dict):
        self.row = row
        self.log_path = log_dir / (row.id.replace(":", "_") + ".log")
        cmd = [interp.python, str(TOOLS / "peerkit" / "worker.py"), "--backend", row.backend, "--form", str(form),
               "--precision", row.precision, "--device", device]
        for k, v in {**dict(row.opts), **opts}.items():
            cmd += ["--opt", f"{k}={v}"]
        self.cmd = cmd
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, env=worker_env(interp), bufsize=1)
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.replies.put(line)
        self.replies.put(None)

    def request(self, req: dict, timeout: float) -> dict:
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return {"ok": False, "error": f"worker exited (rc {self.proc.poll()}); {self.stderr_tail()}"}
        try:
            line = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.close()
            return {"ok": False, "error": f"no reply within {timeout:.0f} s (worker stopped)"}
        if line is None:
            self.proc.wait(timeout=30)
            rc = self.proc.returncode
            why = " = SIGKILL, most likely the kernel's out-of-memory killer: lower --memory-budget-gb" if rc == -9 else ""
            return {"ok": False, "error": f"worker exited (rc {rc}{why}); {self.stderr_tail()}"}
        return json.loads(line)

    def stderr_tail(self, n: int = 3) -> str:
        self._log.flush()
        lines = [x for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]
        return "stderr: " + " / ".join(lines[-n:]) if lines else "no stderr"

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=20)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -------------------------------------------------------------------------------------------------
# grouping, statistics


def parameter_count(ckpt: Path) -> int:
    import yaml

    from funasr_nano.model.layout import expected_shapes

    cfg = yaml.safe_load((ckpt / "config.yaml").read_text(encoding="utf-8"))
    qwen = json.loads((ckpt / "Qwen3-0.6B" / "config.json").read_text(encoding="utf-8"))
    n = 0
    shapes = expected_shapes(cfg, qwen)
    if qwen.get("tie_word_embeddings", False):
        shapes.pop("llm.lm_head.weight", None)  # stored, but one tensor in every runtime's memory
    for shape in shapes.values():
        k = 1
        for d in shape:
            k *= int(d)
        n += k
    return n


def mem_available_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return None


def estimate_gb(row: Row, params: int) -> float:
    """Resident memory of one row's process, for grouping only: weights x bytes/param + runtime."""
    base = 0.8 if row.backend in ("funasr", "transformers") else 0.5
    return params * row.bytes_per_param / 1e9 + base


def make_groups(rows: list[Row], params: int, budget_gb: float, ref_every_group: bool = True) -> list[list[Row]]:
    """Greedy in row order; the reference row joins every group (each row gets a same-round ratio),
    or only the first one with ref_every_group=False (later groups then have no ratio)."""
    ref = next((r for r in rows if r.id == REFERENCE), None)
    if ref is not None and not ref_every_group:
        groups = make_groups([r for r in rows if r is not ref], params, budget_gb - estimate_gb(ref, params))
        return [[ref] + groups[0]] + groups[1:]
    rest = [r for r in rows if r is not ref]
    ref_gb = estimate_gb(ref, params) if ref else 0.0
    groups, cur, used = [], [], ref_gb
    for r in rest:
        gb = estimate_gb(r, params)
        if cur and used + gb > budget_gb:
            groups.append(cur)
            cur, used = [], ref_gb
        cur.append(r)
        used += gb
    if cur or not groups:
        groups.append(cur)
    return [([ref] if ref else []) + g for g in groups]


def first_diff(ids: list, ref: list) -> int | None:
    """Index of the first differing token; None when both agree over their whole (equal) length."""
    for i, (a, b) in enumerate(zip(ids, ref)):
        if a != b:
            return i
    return None if len(ids) == len(ref) else min(len(ids), len(ref))


def derived(run: dict, seconds: float) -> dict:
    e2e = run["e2e_s"]
    mpt = run.get("ms_per_token")
    return {
        "e2e_s": e2e,
        "rtfx": seconds / e2e if e2e else None,
        "encoder_ms": 1000.0 * run["encoder_s"] if run.get("encoder_s") is not None else None,
        "prefill_ms": 1000.0 * run["prefill_s"] if run.get("prefill_s") is not None else None,
        "ms_per_token": mpt,
        "tokens_per_s": 1000.0 / mpt if mpt else None,
        "peak_mb": run["peak_bytes"] / 1e6 if run.get("peak_bytes") else None,
    }


def stats(values: list) -> dict | None:
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


# -------------------------------------------------------------------------------------------------
# the run


def _finish_load(gi: int, row, w, form, t, ctx: dict, results: dict, workers: dict, log) -> None:
    """Wait for a started worker's model (its info reply); keep it or record why it cannot run."""
    res = results[row.id]
    info = w.request({"op": "info"}, ctx["timeout"])
    if not info.get("ok"):
        res["reason"] = f"could not load: {info.get('error')}"
        res["traceback"] = info.get("traceback")
        w.close()
        log(f"[peers] {row.id}: {res['reason']}")
        return
    res.setdefault("info", info["info"])
    res.setdefault("form_dir", str(form))
    workers[row.id] = w
    log(f"[peers] group {gi + 1}: loaded {row.id} ({time.perf_counter() - t:.1f} s)")


def run_group(gi: int, group: list[Row], ctx: dict, results: dict, order: list, log,
              live: dict | None = None, keep: set = frozenset()) -> None:
    """Load the group's workers, warm each new one up once, then run the rounds. `live` holds workers
    kept from the previous group (the reference row's: it joins every group and is loaded once);
    workers whose row is in `keep` stay alive for the next group."""
    live = {} if live is None else live
    workers: dict[str, Worker] = {}
    warm = set()
    starting: list = []
    for row in group:
        res = results[row.id]
        if res.get("reason"):
            continue
        if row.id in live:
            workers[row.id] = live.pop(row.id)
            warm.add(row.id)
            continue
        try:
            form = ensure_form(row.form, ctx["ckpt"], ctx["interps"][row.peer], ctx["forms_root"], log)
        except Exception as e:
            res["reason"] = str(e)
            continue
        t = time.perf_counter()
        try:
            w = Worker(row, ctx["interps"][row.peer], form, ctx["device"], ctx["log_dir"], ctx["worker_opts"](row))
        except OSError as e:  # e.g. a --python that does not exist
            res["reason"] = f"could not start its worker: {e}"
            continue
        starting.append((row, w, form, t))
        if not ctx.get("parallel_load"):
            _finish_load(gi, *starting.pop(), ctx, results, workers, log)
    # With parallel loading every worker above was started before any is waited for: they load
    # their models at once (a GPU host's cores and the one-time kernel compilation overlap).
    for item in starting:
        _finish_load(gi, *item, ctx, results, workers, log)

    def one(row_id: str, rnd: int | None):
        w = workers.get(row_id)
        if w is None:
            return
        rep = w.request({"op": "run", "clip": str(ctx["clip"]), "tokens": ctx["tokens"]}, ctx["timeout"])
        order.append({"group": gi + 1, "round": rnd, "row": row_id, "ok": bool(rep.get("ok"))})
        res = results[row_id]
        if not rep.get("ok"):
            res["reason"] = f"run failed: {rep.get('error')}"
            res["traceback"] = rep.get("traceback")
            w.close()
            workers.pop(row_id)
            log(f"[peers] {row_id}: {res['reason']}")
            return
        r = rep["result"]
        r["group"] = gi + 1
        if rnd is None:
            res.setdefault("warmups", []).append(r)
        else:
            r["round"] = rnd
            res.setdefault("runs", []).append(r)
            log(f"[peers] group {gi + 1} round {rnd + 1}: {row_id} e2e {r['e2e_s']:.3f} s, "
                f"{(r.get('ms_per_token') or float('nan')):.1f} ms/token")

    try:
        for row in group:                       # warm-up, one each new worker, in group order
            if row.id not in warm:
                one(row.id, None)
        for rnd in range(ctx["repeats"]):       # A B C ... A B C ...
            for row in group:
                one(row.id, rnd)
            if ctx.get("progress"):
                ctx["progress"]()                # tables after every round: a run cut short keeps them
    except BaseException:                       # interrupted (SIGTERM, Ctrl-C): stop every worker
        for w in workers.values():
            w.proc.kill()
        raise
    for rid, w in workers.items():
        if rid in keep:
            live[rid] = w
        else:
            w.close()


def summarize(rows: list[Row], results: dict, seconds: float, tokens: int) -> None:
    ref = results.get(REFERENCE, {})
    ref_ids = ref["runs"][0]["token_ids"] if ref.get("runs") else None
    ref_by_group = {}
    for r in ref.get("runs", []):
        ref_by_group.setdefault(r["group"], []).append(r["e2e_s"])
    for row in rows:
        res = results[row.id]
        runs = res.get("runs", [])
        if not runs:
            continue
        cols = {m: [] for m in METRICS}
        for r in runs:
            d = derived(r, seconds)
            ids = r.get("token_ids")
            d["first_diff"] = first_diff(ids, ref_ids) if ids is not None and ref_ids is not None else None
            r["derived"] = d
            for m in METRICS:
                cols[m].append(d.get(m))
        res["stats"] = {m: stats(v) for m, v in cols.items()}
        no_ids = any(r.get("token_ids") is None for r in runs)
        res["all_agree"] = (ref_ids is not None and not no_ids
                            and all(r["derived"]["first_diff"] is None for r in runs))
        res["ids_missing"] = no_ids
        res["tokens_decoded"] = sorted({len(r["token_ids"]) if r.get("token_ids") is not None
                                        else r.get("n_tokens") for r in runs})
        if no_ids and ref.get("runs"):
            same = all(r.get("text") == ref["runs"][0].get("text") for r in runs)
            note = ("token ids not exposed by its API; its text " + ("equals" if same else "differs from")
                    + " the reference's")
            res.setdefault("notes", [])
            if note not in res["notes"]:
                res["notes"].append(note)
        res["prompt_tokens"] = sorted({r.get("prompt_tokens") for r in runs if r.get("prompt_tokens") is not None})
        ratios = []
        for g in sorted({r["group"] for r in runs}):
            mine = [r["e2e_s"] for r in runs if r["group"] == g]
            if ref_by_group.get(g):
                ratios.append(statistics.median(ref_by_group[g]) / statistics.median(mine))
        res["speedup_vs_ref"] = statistics.median(ratios) if ratios else None
        ref_prompt = sorted({r.get("prompt_tokens") for r in ref.get("runs", [])})
        if ref_prompt and res["prompt_tokens"] and res["prompt_tokens"] != ref_prompt:
            note = f"prompt {res['prompt_tokens'][0]} tokens vs the reference's {ref_prompt[0]}"
            if row.backend == "transformers":
                note += (" (its processor places one audio token per LFR frame; funasr places only the "
                         "first ~T/8 adaptor frames, its fake_token_len)")
            res.setdefault("notes", [])
            if note not in res["notes"]:
                res["notes"].append(note)
        if any(n != tokens for n in res["tokens_decoded"]):
            note = f"decoded {res['tokens_decoded']} tokens, not {tokens}"
            res.setdefault("notes", [])
            if note not in res["notes"]:
                res["notes"].append(note)


def _cell(s: dict | None, fmt: str) -> str:
    if not s:
        return "—"
    med = format(s["median"], fmt)
    if s["n"] == 1 or s["min"] == s["max"]:
        return med
    return f"{med} ({format(s['min'], fmt)}–{format(s['max'], fmt)})"


def _diff_cell(res: dict, tokens: int) -> str:
    if res.get("ids_missing"):
        return "n/a"
    s = res.get("stats", {}).get("first_diff")
    if res.get("all_agree"):
        return f"= ({tokens}/{tokens})"
    if not s:
        return "—"
    return _cell(s, ".0f")


def _md(text: str) -> str:
    """One table cell: no pipes, no line breaks."""
    return " ".join(str(text).replace("|", "/").split())


def markdown(doc: dict) -> str:
    h = doc["header"]
    out = [f"# Fun-ASR-Nano runtimes side by side ({h['device_label']})", ""]
    out.append(f"- weights: **{h['weights']}** ({h['checkpoint']})")
    out.append(f"- clip: {h['clip']}; {h['tokens']} new tokens pinned per run; {h['repeats']} timed rounds after "
               f"one warm-up per row; rows interleaved within each group (A B C ... A B C ...)")
    out.append(f"- device: {h['device']}; host: {h['host']}")
    for k, v in h["runtimes"].items():
        out.append(f"- {k}: {v}")
    out.append(f"- memory budget {h['memory_budget_gb']} GB per group{h.get('memory_budget_note', '')} (estimate: parameters x bytes/param + "
               f"runtime); groups: " + "; ".join(f"{i + 1}: {', '.join(g)}" for i, g in enumerate(h["groups"])))
    out.append(f"- command: `{h['command']}`")
    if not h.get("complete", True):
        out.append(f"- **incomplete run**: {h.get('groups_done')} of {len(h['groups'])} groups finished "
                   f"when these tables were written ({h.get('elapsed_s', 0):.0f} s in); rows of unfinished "
                   "groups have fewer timed runs than asked, or none")
    out.append("")
    out.append("| row | e2e s | RTFx | enc+adaptor ms | prefill ms | ms/token | tok/s | peak MB | first diff | "
               "prompt tok | × ref (same group) | notes |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in doc["rows"]:
        s = r.get("stats") or {}
        if r.get("reason") and not s:
            out.append(f"| {r['title']} | — | — | — | — | — | — | — | — | — | — | {_md(r['reason'])} |")
            continue
        notes = list(r.get("notes", []))
        info = r.get("info") or {}
        if info.get("eos_short") or info.get("eos"):
            notes.append(info.get("eos_short") or "EOS " + info["eos"])
        if info.get("prompt"):
            notes.append("prompt: " + info["prompt"])
        if r.get("reason"):
            notes.append(r["reason"])
        sp = r.get("speedup_vs_ref")
        out.append("| " + " | ".join([
            r["title"], _cell(s.get("e2e_s"), ".3f"), _cell(s.get("rtfx"), ".2f"), _cell(s.get("encoder_ms"), ".0f"),
            _cell(s.get("prefill_ms"), ".0f"), _cell(s.get("ms_per_token"), ".1f"), _cell(s.get("tokens_per_s"), ".1f"),
            _cell(s.get("peak_mb"), ".0f"), _diff_cell(r, h["tokens"]),
            ",".join(str(x) for x in r.get("prompt_tokens", [])) or "—",
            f"{sp:.2f}" if sp else "—", _md("; ".join(notes))]) + " |")
    out.append("")
    eos = {}
    for r in doc["rows"]:
        i = r.get("info") or {}
        if i.get("eos_short"):
            eos.setdefault(i["eos_short"], i.get("eos"))
    for k, v in eos.items():
        out.append(f"- {k}: {v}")
    out.append("")
    out.append("Peak memory is each runtime's own counter (MLX peak memory; torch.cuda.max_memory_allocated; "
               "on a CPU the PyTorch process's RSS high-water mark, which includes loading). "
               "funasr-mlx's enc+adaptor includes its frontend. The order of every request is in the JSON "
               "(`order`), as are the raw runs and each worker's versions.")
    return "\n".join(out) + "\n"


def _parse_args(argv):
    """The command line, checked (--tokens >= 2)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="official checkpoint dir (default: real-shaped synthetic)")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length (funasr_nano.synthetic.signals.speech_like)")
    ap.add_argument("--clip-seed", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=40, help="new tokens per run (pinned; >= 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="cpu: MLX cpu + torch cpu; cuda: MLX gpu (CUDA backend) + torch cuda")
    ap.add_argument("--rows", action="append", default=None, help="peer, peer:*, or row id (repeatable)")
    ap.add_argument("--best-preset", default=None, help=f"this project's best preset (default {BEST_PRESET})")
    ap.add_argument("--memory-budget-gb", type=float, default=12.0)
    ap.add_argument("--no-reference-every-group", dest="reference_every_group", action="store_false",
                    help="the reference row only in the first group (saves its runs when memory forces "
                         "many groups; later groups get no same-round ratio)")
    ap.add_argument("--mlx-peers-blas", default="as-shipped", choices=("as-shipped", "project"),
                    help="CPU only: give the MLX peers this project's OpenBLAS too (default: as users get them)")
    ap.add_argument("--python", action="append", default=[], help="PEER=PATH: the peer's interpreter")
    ap.add_argument("--site", action="append", default=[], help="PEER=DIR: pip --target dir of the peer's wheels")
    ap.add_argument("--timeout-s", type=float, default=1800.0, help="per request (load, one run)")
    ap.add_argument("--parallel-load", choices=("auto", "on", "off"), default="auto",
                    help="start a group's workers together so their models load at once (auto: on for cuda, "
                         "where loading 16 workers one by one took over 5 minutes; off on the CPU, whose 2 "
                         "cores and memory the loads would fight over)")
    ap.add_argument("--setup", action="store_true", help="create / reuse the peers' venvs, then exit")
    ap.add_argument("--list", action="store_true", help="print the rows and interpreters, then exit")
    ap.add_argument("--prepare", action="store_true",
                    help="write every selected row's checkpoint form (cached), time nothing, then exit")
    ap.add_argument("--json", default=None)
    ap.add_argument("--md", default=None)
    ap.add_argument("--log-dir", default=None, help="worker stderr logs (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.tokens < 2:
        ap.error("--tokens must be >= 2 (ms/token is measured over the steps after the first token)")
    return args


def _setup_envs(root: Path, log) -> int:
    """--setup: create / reuse every peer's venv (a failure is reported, the others still go ahead)."""
    for env in ENVS.values():
        try:
            log("[peers] " + setup_env(env, root, log))
        except subprocess.CalledProcessError as e:
            log(f"[peers] {env.name}: setup FAILED ({e})")
    return 0


def _list_rows(rows, interps, unrunnable) -> int:
    """--list: each selected row with its interpreter (or why it has none), then the unrunnable ones."""
    for r in rows:
        i = interps[r.peer]
        print(f"{r.id:28s} {r.title:45s} form={r.form:20s} "
              + (f"UNAVAILABLE: {i.missing}" if i.missing else f"{i.python} ({i.how})"))
    for rid, title, reason in unrunnable:
        print(f"{rid:28s} {title:45s} {reason}")
    return 0


def _prepare_forms(rows, interps, ckpt: Path, root: Path, log) -> int:
    """--prepare: write every selected row's checkpoint form (cached); 1 when one could not be made."""
    rc = 0
    for r in rows:
        if interps[r.peer].missing:
            log(f"[peers] {r.id}: {interps[r.peer].missing}")
            continue
        try:
            log(f"[peers] {r.id}: {ensure_form(r.form, ckpt, interps[r.peer], root / 'peers' / 'forms', log)}")
        except RuntimeError as e:
            log(f"[peers] {r.id}: {e}")
            rc = 1
    return rc


def _cap_memory_budget(args, log) -> str:
    """On the CPU, lower ``args.memory_budget_gb`` to MemAvailable - 1.5 GB when it asks for more ->
    the note for the header ("" when not capped). Rows share the machine's memory with whatever else
    runs: a group over MemAvailable gets a worker (ours or someone else's) killed by the kernel."""
    avail = mem_available_gb()
    if args.device == "cpu" and avail is not None and args.memory_budget_gb > avail - 1.5:
        budget_note = (f" (asked {args.memory_budget_gb:g} GB; capped to MemAvailable {avail:.1f} GB - 1.5 GB "
                       "at start)")
        args.memory_budget_gb = round(max(avail - 1.5, 1.0), 1)
        log(f"[peers] memory budget capped to {args.memory_budget_gb} GB{budget_note}")
        return budget_note
    return ""


def _initial_results(rows, interps, params: int) -> dict:
    """{row id: its result record before anything ran}: identity, estimate, interpreter (or why not run)."""
    results = {r.id: {"id": r.id, "title": r.title, "peer": r.peer, "precision": r.precision, "form": r.form,
                      "memory_estimate_gb": round(estimate_gb(r, params), 2)} for r in rows}
    for r in rows:
        i = interps[r.peer]
        results[r.id]["interpreter"] = i.python if not i.missing else None
        results[r.id]["interpreter_how"] = i.how
        if i.missing:
            results[r.id]["reason"] = f"not run: {i.missing}"
    return results


def _runtimes(infos: list) -> dict:
    """{implementation version: its runtime, BLAS, threads, fbank} from the workers' info records."""
    runtimes = {}
    for info in infos:
        if info:
            bits = [info.get("runtime", "")]
            if info.get("blas"):
                bits.append(f"BLAS {info['blas']}")
            if info.get("threads"):
                bits.append(f"{info['threads']} threads")
            if info.get("fbank"):
                bits.append(f"fbank {info['fbank']}")
            runtimes.setdefault(f"{info.get('impl')} {info.get('version')}", ", ".join(b for b in bits if b))
    return runtimes


def _header(args, argv, ckpt: Path, infos: list, groups, params: int, budget_note: str, elapsed_s: float,
            groups_done: int) -> dict:
    """The document's header: what ran, where, with which settings, and how far it got."""
    from funasr_nano.runtime.platform_info import _cpu_name

    dev = next((i.get("device") for i in infos if i.get("device") and i.get("device") != "cpu"), None)
    device_label = "CPU" if args.device == "cpu" else f"CUDA{', ' + dev if dev else ''}"
    return {
        "weights": weights_text(ckpt), "checkpoint": str(ckpt), "synthetic": "synthetic" in weights_text(ckpt),
        "clip": f"{args.seconds:g} s speech_like(seed {args.clip_seed}) at 16 kHz", "seconds": args.seconds,
        "tokens": args.tokens, "repeats": args.repeats, "device": args.device, "device_label": device_label,
        "host": f"{platform.platform()}, {os.cpu_count()} logical CPUs, {_cpu_name()}",
        "runtimes": _runtimes(infos), "memory_budget_gb": args.memory_budget_gb, "memory_budget_note": budget_note,
        "groups": [[r.id for r in g] for g in groups], "parameters": params,
        "mlx_peers_blas": args.mlx_peers_blas,
        "command": "python tools/peers.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                              else sys.argv[1:])),
        "elapsed_s": elapsed_s, "groups_done": groups_done,
        "complete": groups_done == len(groups),
    }


def _run_context(args, ckpt: Path, interps: dict, root: Path, log_dir: Path, clip: Path) -> dict:
    """What `run_group` needs from the command line (its "progress" callback is added by the caller)."""

    def worker_opts(row: Row) -> dict:
        return {"blas": "project"} if row.backend in ("mlx_audio", "funasr_mlx") and args.mlx_peers_blas == "project" \
            else {}

    return {"ckpt": ckpt, "interps": interps, "forms_root": root / "peers" / "forms", "device": args.device,
            "log_dir": log_dir, "timeout": args.timeout_s, "clip": clip, "tokens": args.tokens,
            "repeats": args.repeats, "worker_opts": worker_opts,
            "parallel_load": args.parallel_load == "on" or (args.parallel_load == "auto" and args.device == "cuda")}


def _run_groups(groups, ctx: dict, results: dict, order: list, log, tmp: Path, group_done) -> None:
    """Run the groups one after another (a worker the next group needs again stays up), calling
    ``group_done(groups finished)`` after each; whatever happens, stop the live workers and remove
    the clip's temp dir `tmp`."""
    live: dict = {}
    # a SIGTERM (e.g. `timeout`) unwinds through the finally below, which stops the workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for gi, g in enumerate(groups):
            log(f"[peers] group {gi + 1}/{len(groups)}: {[r.id for r in g]}")
            nxt = {r.id for r in groups[gi + 1]} if gi + 1 < len(groups) else set()
            run_group(gi, g, ctx, results, order, log, live, keep=nxt)
            group_done(gi + 1)
    finally:
        for w in live.values():
            if w.proc.poll() is None:
                w.proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    args = _parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    root = cache_root()
    pythons = dict(x.split("=", 1) for x in args.python)
    sites = dict(x.split("=", 1) for x in args.site)

    if args.setup:
        return _setup_envs(root, log)

    device_rows, not_here = rows_for(args.device, args.best_preset)
    rows = select_rows(device_rows, args.rows, also_known={x[0] for x in not_here} | {x[0].split(":")[0] for x in not_here})
    unrunnable = list(UNRUNNABLE) + [x for x in not_here
                                     if not args.rows or any(s in (x[0], x[0].split(":")[0]) for s in args.rows)]
    interps = {name: resolve_interp(env, root, pythons, sites) for name, env in ENVS.items()}
    if args.list:
        return _list_rows(rows, interps, unrunnable)

    import numpy as np

    from funasr_nano.synthetic.signals import speech_like

    ckpt = Path(args.model) if args.model else default_checkpoint()

    if args.prepare:
        return _prepare_forms(rows, interps, ckpt, root, log)
    params = parameter_count(ckpt)
    budget_note = _cap_memory_budget(args, log)
    groups = make_groups(rows, params, args.memory_budget_gb, args.reference_every_group)
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="peers-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="peers-clip-"))
    clip = tmp / "clip.npy"
    np.save(clip, speech_like(args.seconds, args.clip_seed).astype(np.float32))
    log(f"[peers] {len(rows)} rows in {len(groups)} group(s); worker logs in {log_dir}")

    results = _initial_results(rows, interps, params)

    ctx = _run_context(args, ckpt, interps, root, log_dir, clip)
    order: list = []
    t0 = time.perf_counter()

    def document() -> dict:
        infos = [results[r.id].get("info") or {} for r in rows]
        header = _header(args, argv, ckpt, infos, groups, params, budget_note, time.perf_counter() - t0,
                         state["groups_done"])
        out_rows = [results[r.id] | {"title": r.title} for r in rows]
        out_rows += [{"id": rid, "title": title, "reason": reason} for rid, title, reason in unrunnable]
        return {"header": header, "rows": out_rows, "order": order}

    def write():
        doc = document()
        if args.json:
            Path(args.json).write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
        if args.md:
            Path(args.md).write_text(markdown(doc), encoding="utf-8")
        return doc

    def progress():
        summarize(rows, results, args.seconds, args.tokens)
        write()

    def group_done(n):
        state["groups_done"] = n
        summarize(rows, results, args.seconds, args.tokens)
        write()  # after every group: a run cut short keeps what it measured

    ctx["progress"] = progress
    state = {"groups_done": 0}
    _run_groups(groups, ctx, results, order, log, tmp, group_done)
    summarize(rows, results, args.seconds, args.tokens)
    doc = write()
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
