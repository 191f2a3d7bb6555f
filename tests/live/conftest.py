"""Fixtures of the live system's tests: real databases and a tiny trained run.

Only the tests under tests/live use them; the core tests (tests/core) never start a
database server. The live tests need the `test-live` extra: without it they
stop at once with the command that installs it (the core tests alone:
`python -m pytest tests/core`).
"""

import importlib.util

import pytest

# The live extra's packages (psycopg's import name included), checked before any live
# test module imports them.
_MISSING = [name for name in ("httpx", "sqlalchemy", "alembic", "psycopg", "fastapi",
                              "uvicorn") if importlib.util.find_spec(name) is None]
if _MISSING:
    raise pytest.UsageError(
        f"The live tests (tests/live) need the test-live extra; missing: "
        f"{', '.join(_MISSING)}. Install it with pip install -e \".[test-live]\", or run "
        f"the core tests alone with python -m pytest tests/core.")


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the whole session (tests/live/postgres_server.py)."""
    from postgres_server import PostgresServer

    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database, once on SQLite (WAL, in tmp_path) and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'live.db'}"
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The work directory of a tiny run of the trainer (8x8 digits), for the live tests."""
    from tlc_jax import train

    from helpers import tiny_config

    workdir = tmp_path_factory.mktemp("run")
    train.Trainer(tiny_config(**{"train.epochs": 1}), workdir).run()
    return workdir

