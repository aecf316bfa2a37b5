"""The PostgreSQL test server (tests/integration/postgres_server.py): a real server from Debian's package,
reached through the URL it yields (SQLAlchemy) and psycopg (COPY), killed and restarted with its data kept,
and gone without a trace afterwards."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.postgres_server import postgres_server
from tools import postgres
from tools.procs import group_members, is_alive

try:
    postgres.bin_dir()
except postgres.PostgresError as exc:  # pragma: no cover - make system-deps installs it
    pytest.skip(str(exc), allow_module_level=True)

ROWS = [(i, f"request-{i}", i / 1000) for i in range(5000)]


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_copy_kill_restart_and_cleanup() -> None:
    with postgres_server() as pg:
        assert pg.url == f"postgresql+psycopg://propensity@127.0.0.1:{pg.port}/propensity"
        workdir, pid = pg.workdir, pg.pid
        if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as `postgres`
            assert uid_of(pid) == postgres.server_account().pw_uid  # type: ignore[union-attr]
        with pg.connect() as conn:
            assert conn.execute("SELECT current_user, current_database()").fetchone() == (
                "propensity",
                "propensity",
            )
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (
                False,
            )
            conn.execute("CREATE TABLE scored (id integer PRIMARY KEY, request_id text, phat float8)")
            with conn.cursor() as cur, cur.copy("COPY scored (id, request_id, phat) FROM STDIN") as copy:
                for row in ROWS:
                    copy.write_row(row)
        engine = sa.create_engine(pg.url)
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*), sum(phat) FROM scored")).one() == (
                    len(ROWS),
                    pytest.approx(sum(r[2] for r in ROWS)),
                )
            held = engine.connect()  # a session open across the kill: it breaks, the data does not
            assert pg.kill() == pid
            assert not is_alive(pid) and group_members(pid) == []
            with pytest.raises(sa.exc.OperationalError):
                held.execute(sa.text("SELECT 1"))
            held.close()
            pg.restart()  # crash recovery on the same port and data dir
            assert pg.pid != pid
            engine.dispose()
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM scored")).scalar_one() == len(ROWS)
                last = conn.execute(sa.text("SELECT request_id FROM scored WHERE id = 4999")).scalar_one()
                assert last == "request-4999"
        finally:
            engine.dispose()
        second = pg.pid
    assert not is_alive(second) and group_members(second) == []
    assert not workdir.exists()


def test_a_server_that_fails_to_start_is_cleaned_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port already taken: postgres exits at start; nothing is left running, its dir is removed."""
    made: list[Path] = []
    mkdtemp = tempfile.mkdtemp

    def recorded(**kwargs: Any) -> str:
        made.append(Path(mkdtemp(**kwargs)))
        return str(made[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", recorded)
    with postgres_server() as pg:
        with pytest.raises(RuntimeError, match="postgres exited"), postgres_server(port=pg.port):
            pass  # pragma: no cover
        assert pg.running()  # the first one is untouched
    assert len(made) == 2 and not any(p.exists() for p in made)
