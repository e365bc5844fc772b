"""``python -m graceshut.cli``."""

import sys

from . import main

sys.exit(main())
