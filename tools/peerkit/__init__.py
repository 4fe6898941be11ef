"""Pieces of ``tools/peers.py``, the side-by-side of this project and the other Fun-ASR-Nano runtimes.

``worker.py`` is the long-lived process one row runs in (inside the peer's own interpreter or
virtualenv): it loads one model once and answers JSON requests on stdin/stdout. ``forms.py`` writes
each peer's own checkpoint form from the official ``model.pt`` directory, with the peer's own converter
where one exists. ``backend_*.py`` hold the per-runtime code (load, one timed transcription).
Only the standard library and numpy are imported at module level: a worker imports its runtime lazily.
"""
