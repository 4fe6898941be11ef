"""Ratios between rows of one `tools/peers.py` JSON: ratio of medians and the per-round (paired) ratios.

    python tools/peer_ratios.py PEERS.json PROJECT_ROW/PEER_ROW ...

Prints, for end-to-end seconds and ms per token, peer / project (> 1: the project is faster) as the
ratio of the two medians and as the median (min-max) of the ratios of runs in the same round (the
two rows ran seconds apart, so a machine-wide slowdown of one round cancels).
"""

from __future__ import annotations

import json
import statistics
import sys


def ratios(doc: dict, a: str, b: str, metric: str) -> tuple[float, float, float, float]:
    rows = {r["id"]: r for r in doc["rows"] if r.get("runs")}
    missing = [x for x in (a, b) if x not in rows]
    if missing:
        raise SystemExit(f"no timed runs for {missing}; rows with runs: {sorted(rows)}")
    ra = {(x["group"], x["round"]): x[metric] for x in rows[a]["runs"]}
    rb = {(x["group"], x["round"]): x[metric] for x in rows[b]["runs"]}
    paired = [rb[k] / ra[k] for k in ra if k in rb]
    if not paired:
        raise SystemExit(f"{a} and {b} share no round (different groups?)")
    return (statistics.median(rb.values()) / statistics.median(ra.values()), statistics.median(paired),
            min(paired), max(paired))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or any("/" not in p for p in argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        doc = json.load(f)
    print("| this project | peer | e2e | per token |\n|---|---|---|---|")
    for pair in argv[1:]:
        a, b = pair.split("/", 1)
        cells = []
        for metric in ("e2e_s", "ms_per_token"):
            med, p, lo, hi = ratios(doc, a, b, metric)
            cells.append(f"{med:.2f} (paired {p:.2f}, {lo:.2f}–{hi:.2f})")
        print(f"| {a} | {b} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
