"""Shared test setup: deterministic, strict about silent broadcasting, small."""

import jax
import pytest

# Silent rank promotion hides shape bugs; make it an error in every test.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng():
    return jax.random.key(0)


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the whole session (tests/postgres_server.py)."""
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

    from test_train import tiny_config

    workdir = tmp_path_factory.mktemp("run")
    train.Trainer(tiny_config(**{"train.epochs": 1}), workdir).run()
    return workdir
