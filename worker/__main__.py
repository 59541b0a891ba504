"""``python -m worker`` is ``dcs-cleanup``."""

import sys

from worker.cli import main

sys.exit(main())
