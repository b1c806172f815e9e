"""``python -m videos CHECKPOINT --output FILE``: see :mod:`videos.cli`."""

import sys

from videos.cli import main

sys.exit(main())
