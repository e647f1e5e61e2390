"""State: SQLAlchemy tables, Alembic migrations, and repository functions per table.

Open it with `open_database(url)` (migrates to the newest schema), then call the repository
functions of store.instances / store.operations / store.events / store.images / store.hosts /
store.pools / store.volumes inside `with db.transaction() as session:`.
"""

from corral.store.database import Database, open_database, sqlite_url

__all__ = ["Database", "open_database", "sqlite_url"]
