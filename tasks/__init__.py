"""LRA tasks and their data path: readers, generators, caches, collation, data module.

Import the task classes from their modules (``tasks.listops.ListOpsTask``, ...) or build them
from ``conf/task/<name>.yaml`` with ``tasks.prepare.load_task(name)``. See ``tasks/README.md``.
"""
