"""`python -m funasr_nano ...` runs the `funasr-nano` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
