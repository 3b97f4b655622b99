"""``python -m aiotls``: the same as the ``aiotls`` console script."""

import sys

from .cli import main

sys.exit(main())
