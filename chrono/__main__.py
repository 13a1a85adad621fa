"""`python -m chrono` is the same as the `chrono` console script."""

import sys

from chrono.cli import main

sys.exit(main())
