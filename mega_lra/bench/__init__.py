"""The benchmarks: scripts that print and save numbers, never timed tests.

- `speed.py` (`python -m mega_lra.bench`, `make bench`): forward and forward+backward time and
  peak memory of any model in `conf/model/` (its backbone, at its LRA recipe's sizes) against
  length, beside transformers' Mega; its report (ratios, targets, table, plot) is `report.py`.
- `train_step.py` (`python -m mega_lra.bench_training`, `make bench-train`): one optimiser step
  of every recipe through the Lightning module, and the hours a recipe takes.
- `worker.py`: what both share: a case in a fresh process, the machine record, the run dir.
"""
