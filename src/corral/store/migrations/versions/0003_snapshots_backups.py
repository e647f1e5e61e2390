"""Snapshots and backups (issue 3): snapshots, backups, backup_chains, volumes.restore_source.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add the snapshot and backup tables and the restore source of volumes."""
    with op.batch_alter_table("volumes") as volumes:
        volumes.add_column(sa.Column("restore_source", sa.Text, nullable=True))
    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instance", sa.String(63), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("uid", sa.String(36), nullable=False, unique=True),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.Column("parent", sa.String(63), nullable=True),
        sa.Column("memory", sa.Boolean, nullable=False),
        sa.Column("quiesce", sa.Boolean, nullable=False),
        sa.Column("quiesced", sa.Boolean, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("volumes", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("current", sa.Boolean, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=True),
        sa.Column("vmstate_bytes", sa.BigInteger, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.UniqueConstraint("instance", "name", name="uq_snapshots_instance_name"),
    )
    op.create_index("ix_snapshots_instance", "snapshots", ["instance"])
    op.create_table(
        "backups",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("volume", sa.String(63), nullable=False),
        sa.Column("volume_uid", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("point_id", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("parent", sa.String(16), nullable=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("disk_path", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("virtual_size_bytes", sa.BigInteger, nullable=False),
        sa.Column("instance", sa.String(63), nullable=True),
        sa.Column("operation", sa.String(40), nullable=True),
        sa.Column("duration_ms", sa.Float, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.UniqueConstraint("volume", "point_id", name="uq_backups_volume_point"),
    )
    op.create_index("ix_backups_volume", "backups", ["volume"])
    op.create_index("ix_backups_state", "backups", ["state"])
    op.create_table(
        "backup_chains",
        sa.Column("volume", sa.String(63), primary_key=True),
        sa.Column("volume_uid", sa.String(36), nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("full_reason", sa.Text, nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
    )


def downgrade() -> None:
    """Drop what upgrade added (only for tests of the migration itself)."""
    op.drop_table("backup_chains")
    op.drop_table("backups")
    op.drop_table("snapshots")
    with op.batch_alter_table("volumes") as volumes:
        volumes.drop_column("restore_source")
