"""``funasr-nano transcribe``: many files, batched by seconds of audio, or streamed; long audio through
`funasr_nano.io.longform`, the path the Python API uses too."""

from __future__ import annotations

import sys
from pathlib import Path

from ..io import longform
from .errors import EXIT_FILES, EXIT_OK, EXIT_USAGE, CLIError, _err, _note, _warn
from .inputs import Progress, _file_error, expand_inputs
from .model import (
    _hotwords,
    check_language,
    check_preset,
    load_model,
    repetition_guard,
    synthetic_banner,
)


def _decode_opts(args, language):
    return dict(language=language, hotwords=_hotwords(args.hotwords), itn=not args.no_itn,
                max_new_tokens=args.max_new_tokens, repetition_guard=repetition_guard(args))


def _finish_file(r, trs, segs, long_audio: bool) -> None:
    """Fill a FileResult from its segments' Transcriptions."""
    from ..io.formats import SegmentResult

    for seg, tr in zip(segs, trs):
        r.segments.append(SegmentResult(seg.start_s, seg.end_s, tr.text, tr.stop_reason, len(tr.tokens)))
    r.text, r.text_tn = longform.join(trs, long_audio)


def _share_timings(r, tr, seg_seconds: float) -> None:
    from ..runtime.asr import STAGES

    batch_audio = tr.batch_audio_seconds or tr.audio_seconds or 1.0
    share = seg_seconds / batch_audio if batch_audio else 1.0
    for k in STAGES:
        if k in tr.timings:
            r.timings[k] = r.timings.get(k, 0.0) + tr.timings[k] * share
    r.batch_sizes.append(tr.batch_size)


def run_batch(asr, wavs, opts):
    """Transcribe a batch; if the batch as a whole fails, retry row by row.
    Returns a list of Transcription or Exception per row."""
    try:
        if len(wavs) == 1:
            return [asr.transcribe(wavs[0], **opts)]
        return list(asr.transcribe_batch(wavs, **opts))
    except KeyboardInterrupt:
        raise
    except Exception as e:
        if len(wavs) == 1:
            return [e]
    out = []
    for w in wavs:
        try:
            out.append(asr.transcribe(w, **opts))
        except KeyboardInterrupt:
            raise
        except Exception as e:
            out.append(e)
    return out


def transcribe_files(asr, files, durations, args, language, on_file_done=None):
    """FileResults in the order of `files` (which must all have probed durations)."""
    from ..io.batching import chunk_by_seconds, plan_batches
    from ..io.formats import FileResult

    fs = asr.cfg.frontend.fs
    opts = _decode_opts(args, language)
    results = [FileResult(f, duration=d) for f, d in zip(files, durations)]
    order = sorted(range(len(files)), key=lambda i: (-durations[i], i))
    chunk_s = max(args.batch_seconds * 4, 1200.0)
    for chunk in chunk_by_seconds([durations[i] for i in order], chunk_s):
        idx = [order[j] for j in chunk]
        items = []  # (file index, segment, samples)
        segs_of: dict[int, list] = {}
        n_samples: dict[int, int] = {}
        for i in idx:
            try:
                wav = asr.load_audio(files[i])
            except KeyboardInterrupt:
                raise
            except Exception as e:
                results[i].error = _file_error(files[i], e)
                if on_file_done:
                    on_file_done(results[i])
                continue
            results[i].duration = wav.shape[0] / fs
            segs = longform.segments_of(wav, fs, args.max_segment_seconds)
            segs_of[i] = segs
            n_samples[i] = wav.shape[0]
            for s in segs:
                items.append((i, s, s.slice(wav)))
            if not segs:  # long and silent throughout
                _finish_file(results[i], [], [], True)
                if on_file_done:
                    on_file_done(results[i])
        trs: dict[tuple, object] = {}
        remaining = {i: len(s) for i, s in segs_of.items() if s}
        batches = plan_batches([it[1].duration for it in items], args.batch_seconds, args.batch_size)
        for b in batches:
            rows = [items[k] for k in b]
            live = [r for r in rows if results[r[0]].error is None]
            outs = run_batch(asr, [r[2] for r in live], opts) if live else []
            for (i, seg, _), out in zip(live, outs):
                if isinstance(out, BaseException):
                    results[i].error = _file_error(files[i], out)
                else:
                    trs[(i, seg.start)] = out
                    _share_timings(results[i], out, seg.duration)
            for i, _, _ in rows:
                remaining[i] -= 1
                if remaining[i] == 0:
                    r = results[i]
                    if r.error is None:
                        segs = segs_of[i]
                        _finish_file(r, [trs[(i, s.start)] for s in segs], segs,
                                     longform.is_long(segs, n_samples[i]))
                    if on_file_done:
                        on_file_done(r)
        del items
    return results


def stream_files(asr, files, args, language, out) -> list:
    """--stream: files one at a time, segments in order, text printed as it decodes."""
    from ..io.formats import FileResult

    fs = asr.cfg.frontend.fs
    opts = _decode_opts(args, language)
    results = []
    for f in files:
        r = FileResult(f)
        results.append(r)
        try:
            wav = asr.load_audio(f)
        except Exception as e:
            r.error = _file_error(f, e)
            _err(r.error)
            continue
        r.duration = wav.shape[0] / fs
        segs = longform.segments_of(wav, fs, args.max_segment_seconds)
        if len(files) > 1:
            out.write(f"{f}\t")
        joiner, trs = longform.StreamJoiner(), []
        try:
            for si, seg in enumerate(segs):
                gen = asr.stream(seg.slice(wav), **opts)
                first = True
                while True:
                    try:
                        piece = next(gen)
                    except StopIteration as done:
                        trs.append(done.value)
                        break
                    piece = joiner.piece(piece, first, si > 0)
                    if not piece:
                        continue
                    first = False
                    out.write(piece)
                    out.flush()
        except KeyboardInterrupt:
            raise
        except Exception as e:
            r.error = _file_error(f, e)
            out.write("\n")
            _err(r.error)
            continue
        out.write("\n")
        out.flush()
        _finish_file(r, trs, segs, longform.is_long(segs, wav.shape[0]))
        for tr, seg in zip(trs, segs):
            _share_timings(r, tr, seg.duration)
    return results


def _report_file_warnings(r, max_new_tokens: int) -> None:
    """One warning line per file and stop reason that deserves one."""
    if not r.ok:
        return
    many = len(r.segments) > 1
    for reason, what in (("repetition", "decoding stopped by the repetition guard (a token or n-gram "
                                        "kept repeating; the repeats were dropped)"),
                         ("max_new_tokens", f"reached --max-new-tokens {max_new_tokens}; the text may be cut short")):
        hit = [s for s in r.segments if s.stop_reason == reason]
        if not hit:
            continue
        where = ""
        if many:
            spans = ", ".join(f"{s.start:.1f}-{s.end:.1f} s" for s in hit[:6]) + (", ..." if len(hit) > 6 else "")
            where = f" ({len(hit)} of {len(r.segments)} segments: {spans})"
        _warn(f"{r.path}{where}: {what}")


def _unique_out_path(out_dir: Path, path: str, ext: str, used: set) -> Path:
    stem = Path(path).stem or "audio"
    cand = out_dir / f"{stem}{ext}"
    n = 2
    while cand in used:
        cand = out_dir / f"{stem}-{n}{ext}"
        n += 1
    used.add(cand)
    return cand


def cmd_transcribe(args) -> int:
    language = check_language(args.language)
    _check_options(args)
    files, bad = expand_inputs(args.files)
    if args.format in ("srt", "vtt") and len(files) > 1 and not args.output_dir:
        raise CLIError(EXIT_USAGE, f"{args.format} output holds one file; {len(files)} inputs need --output-dir")
    good, durations = _probe_durations(files, bad)
    for r in bad:
        _err(r.error)
    out_dir = _output_dir(args)
    asr, load_s = load_model(args) if good else (None, 0.0)
    if asr is not None:
        synthetic_banner(asr)
    meta = {"model": asr.source if asr else None, "preset": asr.preset if asr else None,
            "language": language, "load_seconds": round(load_s, 3)}
    out = _Outputs(args, out_dir, meta, bool(asr and asr.synthetic))
    results: list = []
    if good and args.stream:
        results = _transcribe_streamed(asr, good, args, language, out)
    elif good:
        results = _transcribe_batched(asr, good, durations, args, language, out)

    # Outputs: every input in the order given (bad specs included in JSON as errors).
    by_path = {r.path: r for r in results}
    ordered = [by_path[f] for f in good if f in by_path]
    everything = ordered + bad
    if not args.stream and out_dir is None:
        out.write_document(everything if args.format == "json" else ordered)
    n_failed = sum(1 for r in everything if not r.ok)
    if n_failed and len(everything) > 1:
        _note(f"{n_failed} of {len(everything)} inputs failed")
    return EXIT_FILES if n_failed else EXIT_OK


def _check_options(args) -> None:
    if args.stream and args.format != "text":
        raise CLIError(EXIT_USAGE, "--stream prints text as it decodes; it needs --format text")
    if args.output and args.output_dir:
        raise CLIError(EXIT_USAGE, "--output and --output-dir are mutually exclusive")
    if args.synthetic and args.model:
        raise CLIError(EXIT_USAGE, "--synthetic and --model are mutually exclusive")
    check_preset(args.preset)


def _probe_durations(files, bad: list) -> tuple[list, list]:
    """Durations from the headers: bad files fail here, cheaply, before the model loads (they are
    appended to ``bad``)."""
    from ..io import formats
    from ..io.audio import audio_duration

    good, durations = [], []
    for f in files:
        try:
            durations.append(audio_duration(f))
            good.append(f)
        except Exception as e:
            bad.append(formats.FileResult(f, error=_file_error(f, e)))
    return good, durations


def _output_dir(args) -> Path | None:
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CLIError(EXIT_USAGE, f"cannot create --output-dir {out_dir}: {e.strerror or e}") from e
    return out_dir


class _Outputs:
    """Where results go: one file per input (``--output-dir``) as each finishes, or one document."""

    def __init__(self, args, out_dir, meta: dict, synthetic: bool):
        self.args, self.out_dir, self.meta, self.synthetic = args, out_dir, meta, synthetic
        self.written: set = set()

    def write_one(self, r) -> None:
        from ..io import formats

        if self.out_dir is not None and r.ok:
            fmt = self.args.format
            path = _unique_out_path(self.out_dir, r.path, formats.EXTENSIONS[fmt], self.written)
            try:
                path.write_text(formats.render_one(r, fmt, self.meta, self.synthetic), encoding="utf-8")
            except OSError as e:
                r.error = f"{r.path}: cannot write {path}: {e.strerror or e}"
                _err(r.error)

    def file_done(self, r) -> None:
        if r.ok:
            _report_file_warnings(r, self.args.max_new_tokens)
        else:
            _err(r.error)
        self.write_one(r)

    def write_document(self, results) -> None:
        from ..io import formats

        try:
            doc = formats.render(results, self.args.format, self.meta, self.synthetic)
        except ValueError as e:
            raise CLIError(EXIT_USAGE, str(e)) from e
        _write_output(self.args.output, doc)


def _transcribe_streamed(asr, files, args, language, out: _Outputs) -> list:
    stream = _open_output(args.output)
    try:
        results = stream_files(asr, files, args, language, stream)
    finally:
        if stream is not sys.stdout:
            stream.close()
    for r in results:  # --stream printed the text (and errors) already
        if r.ok:
            _report_file_warnings(r, args.max_new_tokens)
        out.write_one(r)
    return results


def _transcribe_batched(asr, files, durations, args, language, out: _Outputs) -> list:
    show = args.progress if args.progress is not None else (len(files) > 1 and sys.stderr.isatty())
    progress = Progress(len(files), sum(durations), bool(show))

    def done(r):
        if show and not r.ok:
            sys.stderr.write("\n")
        out.file_done(r)
        progress.update(1, r.duration if r.ok else 0.0)

    try:
        return transcribe_files(asr, files, durations, args, language, on_file_done=done)
    finally:
        progress.close()


def _open_output(path):
    if not path or path == "-":
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as e:
        raise CLIError(EXIT_USAGE, f"cannot write --output {path}: {e.strerror or e}") from e


def _write_output(path, text: str) -> None:
    if not path or path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise CLIError(EXIT_FILES, f"cannot write --output {path}: {e.strerror or e}") from e


