"""asv's command line, changed so that an interrupted run keeps what it measured.

asv 0.6.6 keeps a commit's results in memory and writes its result file once, after the last
benchmark of that commit (``asv/commands/run.py``: ``result.save`` after ``run_benchmarks``), with a
plain ``open(path, "w")``: Ctrl-C, ``kill`` or a machine going away during an hours-long run loses
everything measured for that commit, and a kill during the write leaves a truncated file.

``python -m funasr_nano.bench.asv_safe <asv arguments>`` is ``python -m asv <asv arguments>`` with two
changes, both below asv's own bookkeeping (same output, same files, same exit status):

* every parameter combination that finishes is written to the commit's result file at once: a copy
  of asv's in-memory results plus the new value (asv's own object is left alone, so the values it
  saves at the end are exactly those it would have saved);
* asv's JSON files are written atomically (a temporary ``.*.part`` file, ``fsync``, rename), so the
  file on disk is always a complete earlier or later version.

Resuming (measuring only what is missing) is the caller's job: ``funasr_nano.bench.history``.
Written against asv 0.6.6 (``funasr-nano bench`` checks the version); with another asv whose
internals differ it warns and runs asv unchanged.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import os
import sys

_state = {"results": None}


def _atomic(write_json):
    def wrapper(path, data, api_version=None, compact=False):
        path = os.path.abspath(path)
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.part")
        write_json(tmp, data, api_version, compact=compact)  # asv's own formatting (creates the folder)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)

    return wrapper


def _n_combos(benchmark) -> int:
    return len(list(itertools.product(*benchmark["params"]))) if benchmark["params"] else 1


def _merge(parts, n, result_type):
    """One asv BenchmarkResult from single-combination runs (asv's layout: nan where not run)."""
    result, samples, number = [float("nan")] * n, [None] * n, [None] * n
    errcode, stderr = 0, []
    for j, r in parts:
        result[j], samples[j], number[j] = r.result[j], r.samples[j], r.number[j]
        if r.errcode:
            errcode = r.errcode
        if r.stderr:
            stderr.append(r.stderr)
    return result_type(result=result, samples=samples, number=number, errcode=errcode,
                       stderr="\n\n".join(stderr), profile=None)


def install() -> bool:
    """Patch asv in this process; False (and asv left alone) when its internals are not as expected."""
    try:
        from asv import results as asv_results
        from asv import runner, util
        from asv.commands import run as run_cmd

        orig_write = util.write_json
        orig_load = asv_results.Results.load_data
        orig_many = run_cmd.run_benchmarks
        orig_one = runner.run_benchmark
        result_type = runner.BenchmarkResult
    except (ImportError, AttributeError) as e:  # pragma: no cover - another asv
        print(f"[asv_safe] warning: asv internals differ ({e}); results are saved only at the end of each commit",
              file=sys.stderr)
        return False

    def load_data(self, result_dir):
        # asv loads the stored results only when it will save them (not for dry runs): remember where.
        self._asv_safe_dir = result_dir
        return orig_load(self, result_dir)

    def run_benchmarks(benchmarks, env, results=None, **kw):
        _state["results"] = results
        try:
            return orig_many(benchmarks, env, results=results, **kw)
        finally:
            _state["results"] = None

    def run_benchmark(benchmark, spawner, profile, selected_idx=None, extra_params=None, cwd=None, **kw):
        live = _state["results"]
        save_dir = getattr(live, "_asv_safe_dir", None)
        if save_dir is None or profile or kw:
            return orig_one(benchmark, spawner, profile, selected_idx=selected_idx, extra_params=extra_params,
                            cwd=cwd, **kw)
        n = _n_combos(benchmark)
        todo = sorted(selected_idx) if selected_idx is not None else list(range(n))
        snapshot = copy.deepcopy(live)
        parts = []
        for j in todo:
            t0 = datetime.datetime.now(datetime.timezone.utc)
            r = orig_one(benchmark, spawner, profile, selected_idx={j}, extra_params=extra_params, cwd=cwd)
            parts.append((j, r))
            dt = (datetime.datetime.now(datetime.timezone.utc) - t0).total_seconds()
            snapshot.add_result(benchmark, r, selected_idx={j}, started_at=t0, duration=dt, record_samples=True)
            snapshot.save(save_dir)
        return _merge(parts, n, result_type)

    util.write_json = _atomic(orig_write)
    asv_results.Results.load_data = load_data
    run_cmd.run_benchmarks = run_benchmarks
    runner.run_benchmark = run_benchmark
    return True


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    install()
    from asv.main import main as asv_main

    sys.argv = ["asv", *argv]
    asv_main()  # exits with asv's status


if __name__ == "__main__":  # pragma: no cover
    main()
