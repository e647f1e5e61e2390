"""Alembic environment: runs on the connection corral.store.migrate hands over (no alembic.ini).

Developers can still run `alembic revision` by pointing sqlalchemy.url at a scratch database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from corral.store.schema import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or pass a connection in config.attributes")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


_main()
