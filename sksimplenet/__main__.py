"""``python -m sksimplenet``: the command line, as the ``sksimplenet`` script."""

import sys

from .cli import main

sys.exit(main())
