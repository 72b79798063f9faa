"""`python -m mega_lra.bench_training`: one training step of every recipe
(`mega_lra.bench.train_step`)."""

import sys

from mega_lra.bench.train_step import main

if __name__ == "__main__":
    sys.exit(main())
