"""Self-pretraining (SPT) on the task's own training split, then fine-tuning (Amos, Berant &
Gupta, ICLR 2024, "Never Train from Scratch"; `docs/self_pretraining.md`).

- `masking`: the corruption as pure functions (which positions, the corrupted input, the
  targets), with counter-based masks: a position's draw depends only on (seed, epoch or split,
  row index, position), so masks are fresh every epoch, fixed on val/test, identical on resume,
  under DDP and with any number of loader workers;
- `objectives`: which objective a run uses (masked for bidirectional backbones, next-token for
  causal ones), the task's masking rate and pixel loss, checked at start-up;
- `model`: `PretrainModel`, the classifier's encoder + backbone (+ final norm) with a
  per-position head instead of pooling and the classifier head;
- `module`: `PretrainModule`, the LightningModule of the pretraining stage (loss, masked
  accuracy / MAE per split);
- `transfer`: loading a pretraining checkpoint into a classifier for fine-tuning, with explicit
  key accounting;
- `stages`: the options that tie the two stages together (step budgets, compute-matched
  controls, the side-by-side comparison run), and `record`: what a pretraining run leaves.
"""
