"""Fixtures of the live system's tests: real databases and a tiny trained run.

Only the tests under tests/live use them; the core tests (outside tests/live) never
start a database server.
"""

import pytest


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
