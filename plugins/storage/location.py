"""Where the shared database is: ``MODELBROKER_DATABASE_URL``, else an SQLite file beside app.log."""

from __future__ import annotations

from pathlib import Path

from modelbroker.plugins.storage.urls import DatabaseURL, UnsupportedDatabase

DATABASE_FILE = "modelbroker.db"


def database_url(settings) -> str:
    """The database the ledger and the client keys use, from the process settings."""
    return settings.database_url or default_database_url(settings.log_file)


def log_directory(log_file: str) -> Path:
    """The folder of app.log (the current folder when there is no log file)."""
    return Path(log_file).parent if log_file else Path(".")


def default_database_url(log_file: str) -> str:
    """An SQLite file beside app.log: ``./modelbroker.db`` with the default settings."""
    return f"sqlite:///{log_directory(log_file).as_posix()}/{DATABASE_FILE}"


def sqlite_path(database_url: str) -> Path | None:
    """The file of an SQLite URL; None for another database or an in-memory one."""
    try:
        return DatabaseURL.parse(database_url).path
    except UnsupportedDatabase:
        return None
