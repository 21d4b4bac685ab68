"""``python -m bench.accuracy``: see :mod:`bench.accuracy.cli`."""

import sys

from bench.accuracy.cli import main

sys.exit(main())
