"""Database URLs: redaction for logs, and the forms each driver wants."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# user:password@ inside any URL-like string; the password is replaced, the user kept.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)@")
# key=value passwords in libpq keyword strings and query strings.
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>[^\s&;]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """Remove every password from free text (URLs and key=value pairs)."""
    # Fast path, for the many log values that cannot hold either form of secret.
    if "@" not in text and "=" not in text:
        return text
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    return _KV_PASSWORD.sub(r"\g<head>***", text)


def asyncpg_dsn(url: str) -> str:
    """asyncpg accepts postgresql:// and postgres:// only: drop a SQLAlchemy driver suffix."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in {"postgresql", "postgres"}:
        raise ValueError(f"not a PostgreSQL URL (scheme {parts.scheme!r})")
    return urlunsplit(parts._replace(scheme="postgresql"))


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"
