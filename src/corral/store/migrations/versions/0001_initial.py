"""The first schema: instances, images, operations, events, hosts.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table of the first release."""
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("uid", sa.String(36), nullable=False, unique=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("restart_generation", sa.Integer, nullable=False),
        sa.Column("deleting", sa.Boolean, nullable=False),
        sa.Column("image", sa.String(63), nullable=False),
        sa.Column("power", sa.String(16), nullable=False),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("memory_mib", sa.Integer, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
    )
    op.create_index("ix_instances_image", "instances", ["image"])
    op.create_table(
        "images",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("recipe", sa.JSON, nullable=False),
        sa.Column("kernel", sa.Text, nullable=True),
        sa.Column("initrd", sa.Text, nullable=True),
        sa.Column("cmdline", sa.Text, nullable=False),
        sa.Column("build_seconds", sa.Float, nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
    )
    op.create_table(
        "operations",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("target_kind", sa.String(32), nullable=False),
        sa.Column("target", sa.String(63), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
    )
    op.create_index("ix_operations_target", "operations", ["target"])
    op.create_index("ix_operations_state", "operations", ["state"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", _TIME, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_table(
        "hosts",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("facts", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
    )


def downgrade() -> None:
    """Drop everything (only for tests of the migration itself)."""
    for table in ("hosts", "events", "operations", "images", "instances"):
        op.drop_table(table)
