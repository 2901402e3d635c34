"""The database the ``ledger`` and ``keys`` plugins share: SQLite or PostgreSQL behind one small
interface (``database.py``), where the database is (``location.py``), and versioned
migrations under a lock, one helper for every set of tables (``migrations.py``).

It is a library of the built-in plugins, not a plugin (no entry point), and not part of
modelbroker's public API: a third party may use it, without the versioning promise.
"""
