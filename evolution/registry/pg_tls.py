"""TLS to PostgreSQL: the libpq parameters (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``) in a URL.

Every connection to the registry's server starts from a SQLAlchemy URL (engines, Alembic, the backup's
``pg_basebackup`` and its own psycopg connections), and psycopg hands a URL's query parameters to libpq. So the
settings' TLS values are written into the URL's query, where every one of those consumers finds them, instead of
each call site being taught a second argument. The settings are defaults, as libpq's ``PGSSL…`` variables are: a
parameter the URL already states wins for that URL (the owner's URL may carry a client certificate of its own).

Nothing here reads a password; the messages name parameters, settings and paths only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
TLS_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey")
# The setting that gives each parameter (docs/production.md, "PostgreSQL over TLS").
SETTING_OF = {name: f"EVOLUTION_DATABASE_{name.upper()}" for name in TLS_PARAMETERS}
# libpq's file parameters; ``sslrootcert=system`` names the system's trust store, not a file.
FILE_PARAMETERS = ("sslrootcert", "sslcert", "sslkey")
# The environment variables libpq's programs (pg_basebackup, psql) read for the same parameters.
LIBPQ_ENV = {name: f"PG{name.upper()}" for name in TLS_PARAMETERS}
_LIBPQ_DEFAULT_MODE = "prefer"


class DatabaseUnreachable(ConnectionError):
    """The registry's server cannot be connected to; the message is one line that names the cause (a CA that did
    not sign the server's certificate, a host-name mismatch, a missing file, a refused login…), never a password.

    A ConnectionError, not a domain error: a server that is down may come back, so activities retry it.
    """


def is_postgresql(url: str) -> bool:
    return url.startswith("postgresql")


def with_tls_defaults(url: str, defaults: Mapping[str, str | None]) -> str:
    """``url`` with each of ``defaults`` (TLS parameter → value; None: not set) added to its query unless the URL
    already states that parameter. Non-PostgreSQL URLs and empty defaults come back unchanged."""
    wanted = {name: value for name, value in defaults.items() if value is not None and name in TLS_PARAMETERS}
    if not wanted or not is_postgresql(url):
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    missing = {name: value for name, value in wanted.items() if name not in parsed.query}
    if not missing:
        return url
    return parsed.update_query_dict(missing).render_as_string(hide_password=False)


def tls_parameters(url: str) -> dict[str, str]:
    """The TLS parameters ``url`` states (after :func:`with_tls_defaults`, what its connections use)."""
    if not is_postgresql(url):
        return {}
    from sqlalchemy.engine import make_url

    query = make_url(url).query
    found: dict[str, str] = {}
    for name in TLS_PARAMETERS:
        value = query.get(name)
        if isinstance(value, tuple):  # a parameter given twice: libpq takes the last
            value = value[-1] if value else None
        if value:
            found[name] = str(value)
    return found


def sslmode_of(parameters: Mapping[str, str]) -> str:
    """The mode libpq will use: the stated one, else its default (``prefer``: TLS if offered, nothing verified)."""
    return parameters.get("sslmode", _LIBPQ_DEFAULT_MODE)


def where(name: str, value: str) -> str:
    """How a message names a parameter: ``sslrootcert=/path (EVOLUTION_DATABASE_SSLROOTCERT or the URL)``."""
    return f"{name}={value} ({SETTING_OF[name]} or the URL)"


def file_problems(parameters: Mapping[str, str]) -> list[str]:
    """Files the parameters name that cannot be used, one line each; checked before connecting, because libpq
    quietly connects without a client certificate whose file is missing and then the server's refusal blames the
    certificate, not the path."""
    problems: list[str] = []
    for name in FILE_PARAMETERS:
        value = parameters.get(name)
        if value is None or (name == "sslrootcert" and value == "system"):
            continue
        path = Path(value)
        if not path.exists():
            problems.append(f"{where(name, value)}: no such file")
        elif not path.is_file():
            problems.append(f"{where(name, value)}: not a file")
        else:
            try:
                with path.open("rb"):
                    pass
            except OSError:
                problems.append(f"{where(name, value)}: not readable by this process")
    if ("sslcert" in parameters) != ("sslkey" in parameters):
        given, other = ("sslcert", "sslkey") if "sslcert" in parameters else ("sslkey", "sslcert")
        problems.append(
            f"{given} is set without {other}: a client certificate needs both ({SETTING_OF[other]})"
        )
    return problems


@dataclass(frozen=True)
class Endpoint:
    """Where a URL connects to and as whom, for messages (never the password)."""

    host: str
    port: int
    user: str

    @classmethod
    def of(cls, url: str) -> Endpoint:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        host = parsed.host or str(parsed.query.get("host") or "localhost")
        return cls(host=host, port=int(parsed.port or 5432), user=parsed.username or "(OS user)")

    def __str__(self) -> str:
        return f"PostgreSQL at {self.host}:{self.port} as {self.user}"


# libpq's and the server's words for each failure (in the order tried) → what to say about it.
_CAUSES: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("certificate verify failed",),
        "the server's certificate is not signed by the CA in {sslrootcert} (certificate verify failed)",
    ),
    (
        ("does not match host name",),
        "the server's certificate does not name the host {host} (host-name mismatch): connect by a name the "
        "certificate lists, or renew it with that name",
    ),
    (("root certificate file",), "the CA file {sslrootcert} does not exist"),
    (
        ("could not open certificate file", "could not load private key", "could not read certificate"),
        "the client certificate or key cannot be read: {detail}",
    ),
    (("has group or world access",), "the client key file must be private (chmod 600, or 640 owned by root)"),
    (
        ("certificate has expired", "certificate expired"),
        "a certificate has expired (the client's {sslcert}, or the server's)",
    ),
    (
        ("certificate authentication failed", "connection requires a valid client certificate"),
        "the server refused the client certificate for {user}: its common name must be the role "
        "(or map to it in pg_ident.conf), signed by the CA the server trusts",
    ),
    (
        ("unknown ca", "alert unknown ca"),
        "the server does not trust the CA that signed the client certificate",
    ),
    (("server does not support ssl",), "the server does not offer TLS, but sslmode={sslmode} requires it"),
    (
        ("no encryption",),
        "the server accepts only encrypted connections, but sslmode={sslmode}: set EVOLUTION_DATABASE_SSLMODE="
        "verify-full",
    ),
    (
        ("no pg_hba.conf entry", "pg_hba.conf rejects"),
        "the server's pg_hba.conf refuses this connection: {detail}",
    ),
    (("password authentication failed",), "password authentication failed for {user}"),
    (("connection refused",), "connection refused: is the server running and listening there?"),
    (
        ("timeout expired", "could not translate host name", "name or service not known"),
        "the server cannot be reached: {detail}",
    ),
)


def explain_connection_failure(error: BaseException, url: str) -> str:
    """One line for a failed connection: where, with which TLS mode, and the cause in plain words."""
    parameters = tls_parameters(url)
    endpoint = Endpoint.of(url)
    detail = _first_line(error)
    lowered = str(error).lower()
    fields = {
        "sslrootcert": where("sslrootcert", parameters["sslrootcert"])
        if "sslrootcert" in parameters
        else "libpq's default (~/.postgresql/root.crt; set EVOLUTION_DATABASE_SSLROOTCERT)",
        "sslcert": parameters.get("sslcert", "(none)"),
        "sslmode": sslmode_of(parameters),
        "host": endpoint.host,
        "user": endpoint.user,
        "detail": detail,
    }
    cause = next(
        (text.format(**fields) for needles, text in _CAUSES if any(n in lowered for n in needles)), detail
    )
    return f"cannot connect to {endpoint} (sslmode={sslmode_of(parameters)}): {cause}"


def _first_line(error: BaseException) -> str:
    """The driver's own message without SQLAlchemy's wrapping, on one line."""
    inner = getattr(error, "orig", None) or error
    text = " ".join(str(inner).split())
    for prefix in ("connection failed: ",):
        text = text.removeprefix(prefix)
    return text.split(" (Background on this error")[0]


def check_files(url: str) -> None:
    """Refuse, in one line, a URL whose TLS files cannot be used (before libpq misreports it)."""
    problems = file_problems(tls_parameters(url))
    if problems:
        raise DatabaseUnreachable(f"cannot connect to {Endpoint.of(url)}: {'; '.join(problems)}")


def libpq_environment(parameters: Mapping[str, str]) -> dict[str, str]:
    """The ``PGSSL…`` variables for libpq's programs (pg_basebackup) that connect with these parameters."""
    return {LIBPQ_ENV[name]: value for name, value in parameters.items() if name in LIBPQ_ENV}
