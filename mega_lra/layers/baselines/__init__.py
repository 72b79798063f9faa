"""Attention of the LRA baselines (Mega's Table 2 and LRA's Table 1), one file per method.

Every module maps x (B, L, D) and a mask (B, L) (True = real token) to (B, L, D); the backbones in
`mega_lra.models` stack them in LRA's pre-LN encoder block (`mega_lra.models.prenorm_stack`).
The maths of each method and how LRA's code computes it: docs/baselines.md.
"""
