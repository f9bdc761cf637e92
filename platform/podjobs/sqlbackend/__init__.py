"""The SQL queue backend (issue 19): `SqlBackend` on the pod's own database.

engine.py makes the engine per dialect, tables.py declares the tables, schema.py creates
and upgrades them with the Alembic revisions in versions/, backend.py is the backend.
"""

from podjobs.sqlbackend.backend import SqlBackend

__all__ = ["SqlBackend"]
