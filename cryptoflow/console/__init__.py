"""The terminal status view of ``cryptoflow up``.

``status``: a snapshot of the running stages (one ``StageStatus`` per stage) and the plain
functions that turn it into a rich table, plain lines and hints; ``view``: the live view
(a table redrawn in place while stdout is a terminal) and the plain one (lines, for CI,
files and ``docker logs``). The supervisor (``cryptoflow/supervisor.py``) builds the
snapshots.
"""
