"""Benchmark tooling around the asv suite in ``benchmarks/``.

* :mod:`funasr_nano.bench.machine` -- machine fingerprint; writes asv's machine file
  (``funasr-nano machine``).
* :mod:`funasr_nano.bench.results` -- reads an asv ``results/`` tree into flat records.
* :mod:`funasr_nano.bench.report`  -- Markdown table and PNG charts from ``results/``
  (``funasr-nano report``).
* :mod:`funasr_nano.bench.quick`   -- the quick suite runner and the regression check
  (``funasr-nano bench`` / ``funasr-nano bench compare``).
* :mod:`funasr_nano.bench.publish` -- asv plugin (``asv.conf.json``): the published site serves its
  JavaScript and CSS from ``site_vendor/`` instead of CDNs.
* :mod:`funasr_nano.bench.browser` -- headless Chromium (playwright) for the site test and screenshots.

Nothing here imports MLX at module import time, so the report works on a machine without it.
"""
