"""``python -m segkit.cli``: the ``segkit`` command."""

import sys

from segkit.cli import main

sys.exit(main())
