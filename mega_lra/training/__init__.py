"""Training: the Lightning module, optimiser groups and schedule, callbacks, atomic checkpoints,
loggers, run directories and `results.json`, and the `train`/`evaluate` runners that the thin
entry points `mega_lra.train` and `mega_lra.eval` call."""
