"""Alembic environment of the live database.

The package passes an open connection in `config.attributes["connection"]`
(`tlc_jax.live.db.Database.migrate`); the `alembic` command line uses the URL in the
TLC_LIVE_DB environment variable instead.
"""

import os

import sqlalchemy as sa
from alembic import context

from tlc_jax.live.db import ENV_URL, Base, normalise_url

config = context.config
target_metadata = Base.metadata


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      # SQLite alters tables by copying them ("batch" mode).
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> sa.URL:
    url = os.environ.get(ENV_URL)
    if not url:
        raise SystemExit(f"Set {ENV_URL} to the database URL (e.g. sqlite:///workdir/live.db).")
    return normalise_url(url)


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
        with engine.begin() as connection:
            _run(connection)
