"""Third-party console noise that cannot be fixed in our code, silenced for the entry points.

`quiet_known_noise()` is called by `python -m mega_lra.train` and `python -m mega_lra.eval` only
(importing the library changes no filter). Each filter matches one message and says why it is
there; everything else still prints. What could be fixed at the source was: the package licence
(pyproject), the `weights_only` notes (explicit in `trainer.save_checkpoint`, and every load is
`weights_only=True`), wandb's `anonymous` warning (`mega_lra.training.loggers.WandbLogger`).
"""

from __future__ import annotations

import logging
import warnings

# Lightning logs its "install litlogger" advertisement through these loggers at every fit.
_LIGHTNING_INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


def _not_an_advert(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def quiet_known_noise() -> None:
    # Lightning's own utilities/_pytree.py builds torch's deprecated `LeafSpec` (a FutureWarning
    # in current torch); nothing in our code does, and Lightning 2.6.6 still does.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning
    )
    # torchdata's StatefulDataLoader calls `torch.set_vital`, which current torch deprecates; the
    # loader is what gives exact mid-epoch resume, and torchdata 0.11 still makes the call.
    warnings.filterwarnings("ignore", message=r"'set_vital' is deprecated", category=UserWarning)
    # Lightning advertises its cloud logger ("try installing litlogger") at the start of every fit.
    for name in _LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if _not_an_advert not in logger.filters:
            logger.addFilter(_not_an_advert)
