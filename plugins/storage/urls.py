"""Database URLs: which database, which file, and how to show one without its password.

The forms SQLAlchemy made familiar are accepted, with or without a driver name:
``sqlite:///relative.db``, ``sqlite:////absolute/path.db``, ``sqlite://`` (in memory),
``postgresql://user:password@host:5432/dbname`` (also ``postgres://`` and
``postgresql+asyncpg://``), so URLs written for earlier versions keep working.

A URL is shown rebuilt from its parsed parts (``scheme://user:***@host:port/dbname``
at most, never the password or the query string). One that parses more than one
way, as a password with an unencoded ``/``, ``#``, ``?`` or ``@`` makes it, is shown
as a placeholder, and the PostgreSQL database refuses it (``UNPARSED``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

BACKENDS = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}
#: The driver names that used to be required; accepted and ignored.
DRIVERS = {"sqlite": ("", "aiosqlite", "pysqlite"), "postgresql": ("", "asyncpg")}
#: Why a URL that parses more than one way is refused; it holds no part of the URL.
UNPARSED = ("MODELBROKER_DATABASE_URL does not parse as a database URL (postgresql://user:password@host:5432/dbname): "
            "percent-encode the special characters in the user name and password (/ as %2F, # as %23, ? as %3F, "
            "@ as %40)")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
#: One host of a (comma-separated) host list: ``name``, ``[IPv6]``, either with ``:port``.
_HOST = re.compile(r"(\[[0-9A-Za-z:.%]*\]|[^:\[\]]*)(:[0-9]*)?")
#: The query parameters whose values may hold an ``@`` (libpq's names).
_AT_ALLOWED = ("user", "password")


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
            named = f"unsupported database {scheme!r}" if sep and _SCHEME.fullmatch(scheme) else "no scheme://"
            raise UnsupportedDatabase(
                f"MODELBROKER_DATABASE_URL: {named} in {safe_url(url)}; "
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

    @property
    def parses(self) -> bool:
        """Whether the URL parses one way only (an SQLite URL always does)."""
        return self.backend == "sqlite" or _shown(self.text) is not None


def safe_url(url: str) -> str:
    """The URL for logs and error messages: ``scheme://user:***@host:port/dbname`` at most.

    SQLite URLs, which hold no password, are shown as they are."""
    scheme, sep, _ = url.partition("://")
    if sep and BACKENDS.get(scheme.lower().partition("+")[0]) == "sqlite":
        return url
    shown = _shown(url)
    if shown is not None:
        return shown
    if sep and _SCHEME.fullmatch(scheme):
        return f"{scheme}://<url not shown: it does not parse>"
    return "<database URL not shown: it does not parse>"


def _shown(url: str) -> str | None:
    """The URL rebuilt from its parsed parts, without password or query; None if it parses more than one way."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, strict_parsing=True)  # as asyncpg reads it
    except ValueError:
        return None
    if (not _SCHEME.fullmatch(parts.scheme) or "://" not in url or "#" in url or "@" in parts.path
            or parts.netloc.count("@") > 1
            or any("@" in key or ("@" in value and key not in _AT_ALLOWED) for key, value in query)):
        return None
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    if not all(_HOST.fullmatch(host) for host in hostinfo.split(",")):
        return None
    user, colon, _ = userinfo.partition(":")
    return f"{parts.scheme}://{user}{':***' if colon else ''}{at}{hostinfo}{parts.path}"
