"""Database URLs: which database, which file, and how to show one without its password.

The forms SQLAlchemy made familiar are accepted, with or without a driver name:
``sqlite:///relative.db``, ``sqlite:////absolute/path.db``, ``sqlite://`` (in memory),
``postgresql://user:password@host:5432/dbname`` (also ``postgres://`` and
``postgresql+asyncpg://``), so URLs written for earlier versions keep working.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BACKENDS = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}
#: The driver names that used to be required; accepted and ignored.
DRIVERS = {"sqlite": ("", "aiosqlite", "pysqlite"), "postgresql": ("", "asyncpg")}


class UnsupportedDatabase(ValueError):
    """The database URL names neither SQLite nor PostgreSQL, or cannot be read."""


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    """``backend`` is ``sqlite`` or ``postgresql``; ``path`` the SQLite file (None in memory)."""

    text: str
    backend: str
    path: Path | None = None

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        scheme, sep, rest = url.partition("://")
        backend_name, _, driver = scheme.lower().partition("+")
        backend = BACKENDS.get(backend_name)
        if not sep or backend is None or driver not in DRIVERS[backend]:
            raise UnsupportedDatabase(
                f"MODELBROKER_DATABASE_URL: unsupported database {scheme or url!r} in {safe_url(url)}; "
                "use sqlite:///path/to/modelbroker.db or postgresql://user:password@host:5432/dbname"
            )
        if backend == "postgresql":
            return cls(url, backend)
        database = rest[1:] if rest.startswith("/") else rest
        database = database.partition("?")[0]
        path = None if database in ("", ":memory:") else Path(database)
        return cls(url, backend, path)

    @property
    def dsn(self) -> str:
        """For PostgreSQL: the URL as libpq and asyncpg read it (``postgresql://...``)."""
        return "postgresql://" + self.text.partition("://")[2]

    @property
    def safe(self) -> str:
        return safe_url(self.text)


def safe_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable database URL>"
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))
