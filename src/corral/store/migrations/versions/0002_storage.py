"""Storage (issue 3): pools and volumes, and the disk-image columns of images.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add pools, volumes, and images.disk / disk_virtual_size_bytes / cloud_init."""
    with op.batch_alter_table("images") as images:
        images.add_column(sa.Column("disk", sa.Text, nullable=True))
        images.add_column(
            sa.Column("disk_virtual_size_bytes", sa.BigInteger, nullable=False, server_default="0")
        )
        images.add_column(
            sa.Column("cloud_init", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_table(
        "pools",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("uid", sa.String(36), nullable=False, unique=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("deleting", sa.Boolean, nullable=False),
        sa.Column("driver", sa.String(16), nullable=False),
        sa.Column("path", sa.Text, nullable=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
    )
    op.create_table(
        "volumes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("uid", sa.String(36), nullable=False, unique=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("deleting", sa.Boolean, nullable=False),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("source_image", sa.String(63), nullable=True),
        sa.Column("source_volume", sa.String(63), nullable=True),
        sa.Column("thin_source", sa.Boolean, nullable=False),
        sa.Column("instance", sa.String(63), nullable=True),
        sa.Column("attached_to", sa.String(63), nullable=True),
        sa.Column("owner", sa.String(63), nullable=True),
        sa.Column("failure", sa.JSON, nullable=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
    )
    for column in ("pool", "source_image", "source_volume", "instance", "attached_to", "owner"):
        op.create_index(f"ix_volumes_{column}", "volumes", [column])


def downgrade() -> None:
    """Drop what upgrade added (only for tests of the migration itself)."""
    op.drop_table("volumes")
    op.drop_table("pools")
    with op.batch_alter_table("images") as images:
        images.drop_column("cloud_init")
        images.drop_column("disk_virtual_size_bytes")
        images.drop_column("disk")
