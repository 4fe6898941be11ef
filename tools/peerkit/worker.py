"""One row's long-lived process: load one model once, answer JSON requests, one per line.

    <peer python> tools/peerkit/worker.py --backend NAME --form DIR --precision P --device D [--opt k=v ...]

Requests on stdin, replies on stdout (one JSON object per line; everything else a library prints goes
to stderr, because the protocol keeps its own copy of the stdout descriptor):

    {"op": "info"}                                 -> {"ok": true, "info": {...}}  (versions, labels, load s)
    {"op": "run", "clip": "x.npy", "tokens": 40}   -> {"ok": true, "result": {...}} (one timed transcription)
    {"op": "quit"}                                 -> exits

A failure answers {"ok": false, "error": "<exception type>: <message>", "traceback": "..."}; a load
failure is answered to the first request, so the parent can write the exact reason into the row.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent
REPO = TOOLS.parent
for p in (str(REPO),):  # tools.peerkit, tests.support, funasr_nano (when not installed)
    if p not in sys.path:
        sys.path.insert(0, p)


def _protocol_stream():
    """A private copy of stdout for the replies; fd 1 then points at stderr so stray prints from
    the runtimes (progress bars, notices) cannot corrupt the protocol."""
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def _error(e: BaseException) -> dict:
    return {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        return _json_safe(x.item())
    return x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", required=True)
    ap.add_argument("--form", required=True)
    ap.add_argument("--precision", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--opt", action="append", default=[], help="backend option key=value")
    args = ap.parse_args(argv)
    out = _protocol_stream()
    # a crash in native code leaves its Python stack in the worker's log (on a descriptor of its
    # own: backends may point fd 2 elsewhere while they run)
    faulthandler.enable(file=os.fdopen(os.dup(2), "w"))
    opts = dict(o.split("=", 1) for o in args.opt)

    runner, load_error = None, None
    t0 = time.perf_counter()
    try:
        mod = importlib.import_module(f"tools.peerkit.backend_{args.backend}")
        runner = mod.load(Path(args.form), args.precision, args.device, opts)
    except BaseException as e:  # reported to the parent, which writes it into the row
        load_error = _error(e)
    load_s = time.perf_counter() - t0

    import numpy as np

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        op = req.get("op")
        if op == "quit":
            break
        if load_error is not None:
            out.write(json.dumps(load_error) + "\n")
            continue
        try:
            if op == "info":
                info = dict(runner.info())
                info["load_s"] = load_s
                reply = {"ok": True, "info": info}
            elif op == "run":
                wav = np.load(req["clip"]).astype(np.float32)
                reply = {"ok": True, "result": runner.run(wav, int(req["tokens"]))}
            else:
                reply = {"ok": False, "error": f"unknown op {op!r}"}
        except BaseException as e:
            reply = _error(e)
        out.write(json.dumps(_json_safe(reply)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
