"""PostgreSQL from Debian's `postgresql` package, for the tests (tests/integration/postgres_server.py) and the
local cluster (tools/cluster.py): find its commands, make a data dir, and the command lines that run them.

Debian keeps the server's commands out of PATH, in /usr/lib/postgresql/<major>/bin: the newest major there
is used, else whatever PATH has. PostgreSQL refuses to run as root: as root, initdb and postgres run as the
`postgres` user the package creates (through setpriv, which execs: the pid started is the server's own),
and the directories they write are made theirs. As another user they run as that user.

A server made here trusts every connection that reaches it, and listens on 127.0.0.1 only (pg_hba.conf:
the local socket and 127.0.0.1/32, nothing else): for tests and a development cluster on one machine.
Its bootstrap superuser is `postgres`; the service connects as the role `propensity`, which owns the
database `propensity` (ensure_database) and is no superuser.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
from pathlib import Path

HOST = "127.0.0.1"
PGLIB = Path("/usr/lib/postgresql")
OS_USER = "postgres"  # the account the server runs as when we are root
SUPERUSER = "postgres"  # initdb's bootstrap superuser
ROLE = "propensity"
DATABASE = "propensity"
PG_HBA = (
    "# Generated (tools/postgres.py): trust on the local socket and on 127.0.0.1 only.\n"
    "local all all trust\n"
    f"host all all {HOST}/32 trust\n"
)


class PostgresError(RuntimeError):
    pass


def bin_dir(pglib: Path = PGLIB) -> Path:
    """The newest /usr/lib/postgresql/<major>/bin with a `postgres` in it, else the dir of PATH's."""
    majors = [p for p in pglib.glob("*/bin") if p.parent.name.isdigit() and (p / "postgres").is_file()]
    if majors:
        return max(majors, key=lambda p: int(p.parent.name))
    found = shutil.which("postgres")
    if found is None:
        raise PostgresError(
            f"PostgreSQL not found (no {pglib}/<major>/bin/postgres, none on PATH): "
            "apt-get install postgresql (make system-deps)"
        )
    return Path(found).resolve().parent


def server_account() -> pwd.struct_passwd | None:
    """The account initdb and postgres run as: `postgres` when we are root, None (ourselves) otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        raise PostgresError(
            f"PostgreSQL refuses to run as root and there is no `{OS_USER}` user to run it as: "
            "apt-get install postgresql creates one"
        ) from None


def as_server_user(argv: list[str]) -> list[str]:
    """argv run as the server's account: setpriv (it execs, so the pid is the command's) when root."""
    account = server_account()
    if account is None:
        return argv
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    ids = ["--reuid", str(account.pw_uid), "--regid", str(account.pw_gid), "--init-groups"]
    return [setpriv, *ids, "--", *argv]


def make_private_dir(path: Path) -> None:
    """A dir (mode 0700) the server's account owns (PostgreSQL insists on both for its data dir)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    give_to_server(path)


def give_to_server(path: Path) -> None:
    account = server_account()
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def blocking_ancestor(path: Path) -> Path | None:
    """The first dir above `path` the server's account cannot pass through (no search permission for it;
    ACLs are not read), or None when it can reach `path` (dirs not made yet are counted as passable)."""
    account = server_account()
    if account is None:
        return None
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for parent in reversed(path.resolve().parents):
        try:
            st = parent.stat()
        except FileNotFoundError:  # made later, by us (mkdir: 0777 less the umask)
            break
        if st.st_uid == account.pw_uid:
            allowed = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            allowed = bool(st.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(st.st_mode & stat.S_IXOTH)
        if not allowed:
            return parent
    return None


def initdb_argv(bindir: Path, data_dir: Path | str, *, no_sync: bool = False) -> list[str]:
    """initdb of a UTF8 cluster (C collation) whose every local connection is trusted (PG_HBA narrows it
    to the socket and 127.0.0.1 afterwards: write_hba)."""
    argv = [str(bindir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"]
    return [*argv, "--no-locale", "--no-instructions", *(["--no-sync"] if no_sync else [])]


def write_hba(data_dir: Path) -> None:
    path = data_dir / "pg_hba.conf"
    path.write_text(PG_HBA)
    path.chmod(0o600)
    give_to_server(path)


def server_argv(
    bindir: Path, data_dir: Path | str, port: int, *, socket_dir: str = "", **settings: str
) -> list[str]:
    """postgres on 127.0.0.1:port in the foreground (socket_dir "": no unix socket); `settings` are
    `-c name=value` (e.g. fsync="off")."""
    argv = [str(bindir / "postgres"), "-D", str(data_dir), "-h", HOST, "-p", str(port), "-k", socket_dir]
    for name, value in settings.items():
        if not re.fullmatch(r"[a-z_.]+", name):
            raise ValueError(f"not a PostgreSQL setting name: {name!r}")
        argv += ["-c", f"{name}={value}"]
    return argv


def url(port: int, *, role: str = ROLE, database: str = DATABASE) -> str:
    """The SQLAlchemy URL the service is given (PROPENSITY_PREDICTION_LOG_URL)."""
    return f"postgresql+psycopg://{role}@{HOST}:{port}/{database}"


def ready(port: int, data_dir: Path | str | None = None, timeout: float = 2.0) -> bool:
    """The server on `port` accepts connections and answers a query (as the superuser, to its own
    database); with `data_dir`, it must also be the server of that data dir (as the server names it), not
    another one that holds the port."""
    import psycopg

    try:
        with psycopg.connect(
            host=HOST, port=port, user=SUPERUSER, dbname="postgres", connect_timeout=max(1, round(timeout))
        ) as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    except psycopg.Error:
        return False
    return row is not None and (data_dir is None or row[0] == str(data_dir))


def ensure_database(port: int, *, role: str = ROLE, database: str = DATABASE) -> bool:
    """The login role `role` (no superuser) and the database `database` it owns, made unless they exist.
    True when the database was made now."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=HOST, port=port, user=SUPERUSER, dbname="postgres", autocommit=True, connect_timeout=5
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return False
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role))
        )
        return True
