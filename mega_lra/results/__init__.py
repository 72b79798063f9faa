"""Results: from run dirs to the paper's tables and figures.

`record.py` is `results.json` itself (the `Results` record the runner writes and everything
else reads); then runs -> groups -> tables / figures: `runs.py` finds and reads run dirs,
`grouping.py` groups them by config hash and chooses one group per cell, `paper.py` holds the
paper's numbers (`paper_results.yaml`), `tables.py` builds the four tables as data, `render.py`
prints them (markdown, LaTeX, CSV) and `figures.py` draws Figure 4 and learning curves. The
command lines are `python -m mega_lra.table` and `python -m mega_lra.plot`.
"""

from mega_lra.results.record import SCHEMA_VERSION, Results, ResultsError, read_results

__all__ = ["SCHEMA_VERSION", "Results", "ResultsError", "read_results"]
