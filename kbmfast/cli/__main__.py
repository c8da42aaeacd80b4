"""``python -m kbmfast.cli``: the ``kbmfast`` command (the console script's entry point)."""

import sys

from . import main

sys.exit(main())
