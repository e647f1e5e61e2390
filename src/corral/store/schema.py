"""The tables, as typed SQLAlchemy ORM classes. Migrations in store/migrations create them.

Spec and status are JSON documents (portable JSON columns, no SQLite-only SQL). The few spec
fields that queries filter or sum on (power, cpus, memory_mib, image) are copied into plain
columns by the repository, so capacity sums and "who uses this image" stay single queries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corral.store.types import UTCDateTime


class Base(DeclarativeBase):
    """Declarative base of every Corral table."""


class InstanceRow(Base):
    """One instance: identity, desired spec, observed status."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    # The generation at which a restart was asked for; the restart is done once the controller
    # has observed that generation (level-triggered, so it survives a controller restart).
    restart_generation: Mapped[int] = mapped_column(Integer, default=0)
    deleting: Mapped[bool] = mapped_column(Boolean, default=False)
    image: Mapped[str] = mapped_column(String(63), index=True)
    power: Mapped[str] = mapped_column(String(16))
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ImageRow(Base):
    """One image record; its files live on the host that built it."""

    __tablename__ = "images"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32), default="initramfs")
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    digest: Mapped[str] = mapped_column(String(128), default="")
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    kernel: Mapped[str | None] = mapped_column(Text, nullable=True)
    initrd: Mapped[str | None] = mapped_column(Text, nullable=True)
    cmdline: Mapped[str] = mapped_column(Text, default="")
    build_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    # "disk" images (migration 0002): the qcow2 root disk volumes thin-clone, and cloud-init.
    disk: Mapped[str | None] = mapped_column(Text, nullable=True)
    disk_virtual_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    cloud_init: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OperationRow(Base):
    """One long-running piece of work. `params` is internal (never shown by the API)."""

    __tablename__ = "operations"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    target_kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(63), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EventRow(Base):
    """One event; `id` is the stream position clients resume from (Last-Event-ID)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    type: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(63))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class HostRow(Base):
    """A host's last reported facts (capacity, accelerator)."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="ready")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PoolRow(Base):
    """One storage pool: identity, desired spec, observed status (migration 0002)."""

    __tablename__ = "pools"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    deleting: Mapped[bool] = mapped_column(Boolean, default=False)
    driver: Mapped[str] = mapped_column(String(16))
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class VolumeRow(Base):
    """One volume. Besides spec and status it keeps, as plain columns, what queries need:
    its pool, its sources (what it depends on), the instance whose spec lists it (`instance`,
    written with that spec), the instance it is attached to now (`attached_to`, a copy of the
    status field the controller writes), the instance that owns it, and why its creation
    failed."""

    __tablename__ = "volumes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    deleting: Mapped[bool] = mapped_column(Boolean, default=False)
    pool: Mapped[str] = mapped_column(String(63), index=True)
    source_image: Mapped[str | None] = mapped_column(String(63), nullable=True, index=True)
    source_volume: Mapped[str | None] = mapped_column(String(63), nullable=True, index=True)
    thin_source: Mapped[bool] = mapped_column(Boolean, default=False)
    instance: Mapped[str | None] = mapped_column(String(63), nullable=True, index=True)
    attached_to: Mapped[str | None] = mapped_column(String(63), nullable=True, index=True)
    owner: Mapped[str | None] = mapped_column(String(63), nullable=True, index=True)
    failure: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # A volume restored from a backup (migration 0003): the restore point's file, copied in
    # full when the volume is made.
    restore_source: Mapped[str | None] = mapped_column(Text, nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SnapshotRow(Base):
    """One snapshot of an instance (migration 0003). `tag` is the name of the qcow2 internal
    snapshot on each of `volumes`; `parent` and `current` make the instance's snapshot tree."""

    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("instance", "name", name="uq_snapshots_instance_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(63))
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    tag: Mapped[str] = mapped_column(String(128))
    parent: Mapped[str | None] = mapped_column(String(63), nullable=True)
    memory: Mapped[bool] = mapped_column(Boolean, default=False)
    quiesce: Mapped[bool] = mapped_column(Boolean, default=True)  # asked for
    quiesced: Mapped[bool] = mapped_column(Boolean, default=False)  # happened
    description: Mapped[str] = mapped_column(Text, default="")
    volumes: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    current: Mapped[bool] = mapped_column(Boolean, default=False)
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    vmstate_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BackupRow(Base):
    """One restore point of a volume (migration 0003). Rows outlive their volume: a backup is
    how a deleted volume comes back. `seq` orders the points of a volume; `point_id` is the
    name users see (b0001, ...)."""

    __tablename__ = "backups"
    __table_args__ = (UniqueConstraint("volume", "point_id", name="uq_backups_volume_point"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    volume: Mapped[str] = mapped_column(String(63), index=True)
    volume_uid: Mapped[str] = mapped_column(String(36))
    seq: Mapped[int] = mapped_column(Integer)
    point_id: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    parent: Mapped[str | None] = mapped_column(String(16), nullable=True)
    path: Mapped[str] = mapped_column(Text)
    disk_path: Mapped[str] = mapped_column(Text)  # the volume's file when it was backed up
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending, ready, deleting
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    virtual_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    instance: Mapped[str | None] = mapped_column(String(63), nullable=True)  # guest at backup
    operation: Mapped[str | None] = mapped_column(String(40), nullable=True)
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BackupChainRow(Base):
    """Per volume name: the last point number handed out, which volume (uid) the chain's
    dirty bitmap belongs to, and why the next backup must be full (None: it may be
    incremental) -- e.g. the newest point was deleted, or a backup was cut short."""

    __tablename__ = "backup_chains"

    volume: Mapped[str] = mapped_column(String(63), primary_key=True)
    volume_uid: Mapped[str] = mapped_column(String(36))
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    full_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
