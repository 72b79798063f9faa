"""`python -m mega_lra.bench`: the speed and memory benchmark (`mega_lra.bench.speed`)."""

import sys

from mega_lra.bench.speed import main

sys.exit(main())
