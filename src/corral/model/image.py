"""Images: bootable artifacts built from a recipe, stored with name, kind, size and digest."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from corral.model.names import name_problem


class ImageState(StrEnum):
    """Lifecycle of an image record."""

    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


class Image(BaseModel):
    """A stored image. `kernel`/`initrd`/`disk` are paths on the host that built it.

    Kinds: `initramfs` (kernel + initrd, no disk: the tiny guest) and `disk` (kernel + initrd
    for direct boot, plus a qcow2 root disk: instances boot from a thin clone of it).
    """

    name: str
    kind: str = "initramfs"
    state: ImageState = ImageState.BUILDING
    size_bytes: int = 0
    digest: str = ""
    recipe: dict[str, Any] = Field(default_factory=dict)
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str = ""
    disk: str | None = None  # "disk" images: the qcow2 root disk that volumes thin-clone
    disk_virtual_size_bytes: int = 0
    cloud_init: bool = False  # the guest runs cloud-init: Corral gives it a NoCloud seed
    build_seconds: float | None = None
    created_at: datetime
    message: str = ""


class ImageBuildRequest(BaseModel):
    """Body of POST /v1/images: build `recipe` and store it as `name` (default: the recipe)."""

    model_config = ConfigDict(extra="forbid")

    recipe: str
    name: str | None = None

    @field_validator("recipe", "name")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        if value is not None:
            problem = name_problem(value)
            if problem is not None:
                raise ValueError(problem)
        return value
