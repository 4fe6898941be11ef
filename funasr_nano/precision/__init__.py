"""Weight precision: the preset grammar and plans (``plan``), quantized layers and applying a plan
(``quantize``), quantized checkpoints (``io``). See ``plan`` for the grammar.
"""

from __future__ import annotations


