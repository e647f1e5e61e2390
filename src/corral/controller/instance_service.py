"""What the API asks of instances: validate against the world, write the spec, hand over.

Each method checks what only the control plane can check (image exists, capacity, state,
disks), writes the desired state and an Operation in one transaction, publishes, and enqueues
the instance for its reconciler. None of them waits for a guest: the Operation does that.

An instance of a `disk` image gets its root volume `<name>-root` here, in the transaction that
creates the instance: a thin clone of the image's disk, owned by the instance, first in
spec.disks. The spec's disks *claim* their volumes in the same transaction as the spec, so a
volume can never be in two instances' specs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from corral.bus.agent_link import AgentAPI
from corral.controller.capacity import check_capacity
from corral.controller.hosts import HostMonitor
from corral.controller.recorder import Recorder
from corral.controller.storage_checks import (
    DISK_IMAGE_KIND,
    ROOT_DISK_FIELDS,
    VolumeFields,
    check_instance_disks,
    check_new_volume,
    refuse_shrink,
)
from corral.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from corral.model.image import Image, ImageState
from corral.model.instance import (
    FromSnapshot,
    Instance,
    InstanceCreate,
    InstanceSpec,
    InstanceSpecPatch,
    InstanceState,
    PowerState,
    RootDisk,
)
from corral.model.names import MAX_NAME_LENGTH, name_problem
from corral.model.operation import Operation
from corral.model.rpc import ExecRequest, ExecResult
from corral.model.snapshot import SnapshotState
from corral.model.storage import (
    InstanceDisk,
    VolumeFormat,
    VolumeSource,
    VolumeSourceKind,
    VolumeSpec,
)
from corral.store import images as image_store
from corral.store import instances as instance_store
from corral.store import operations as operation_store
from corral.store import snapshots as snapshot_store
from corral.store import volumes as volume_store
from corral.store.instances import InstanceRecord

Enqueue = Callable[[str, bool], None]
TARGET_KIND = "instance"
ROOT_SUFFIX = "-root"
SNAPSHOT_FIELDS = VolumeFields(
    name="name",
    pool="from_snapshot",
    size="from_snapshot",
    image="from_snapshot",
    volume="from_snapshot.snapshot",
    snapshot="from_snapshot.snapshot",
)
NewVolume = tuple[str, VolumeSpec, str | None]  # name, spec, owner


def root_volume_name(instance: str) -> str:
    """The name of an instance's root volume."""
    return instance + ROOT_SUFFIX


def root_volume_spec(image: Image, root: RootDisk) -> VolumeSpec:
    """The root volume of an instance of disk image `image`: a thin clone, grown if asked."""
    refuse_shrink(
        root.size_bytes,
        image.disk_virtual_size_bytes,
        f"image {image.name!r}",
        ROOT_DISK_FIELDS.size,
    )
    return VolumeSpec(
        pool=root.pool,
        size_bytes=root.size_bytes or image.disk_virtual_size_bytes or None,
        format=VolumeFormat.QCOW2,
        source=VolumeSource(kind=VolumeSourceKind.IMAGE, image=image.name),
    )


def parse_if_match(value: str) -> int | None:
    """The generation an If-Match header names (`"3"`, `W/"3"`, `3`); None for `*`."""
    text = value.strip()
    if text == "*":
        return None
    text = text.removeprefix("W/").strip('"')
    try:
        return int(text)
    except ValueError:
        raise PreconditionFailed(
            f"If-Match {value!r} is not an ETag of this API; send the ETag header of a GET"
        ) from None


class InstanceService:
    """Create, change, start, stop, restart, delete instances; exec and console pass-through."""

    def __init__(
        self,
        recorder: Recorder,
        agent: AgentAPI,
        hosts: HostMonitor,
        enqueue: Enqueue,
        default_shutdown_timeout_s: float,
        enqueue_volume: Callable[[str], None] = lambda _name: None,
    ) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._agent = agent
        self._hosts = hosts
        self._enqueue = enqueue
        self._enqueue_volume = enqueue_volume
        self._default_timeout_s = default_shutdown_timeout_s

    def __repr__(self) -> str:
        return "InstanceService()"

    # -- helpers -----------------------------------------------------------------------------
    def _record(self, name: str) -> InstanceRecord:
        with self._db.transaction() as session:
            return instance_store.get_instance(session, name)

    def get(self, name: str) -> Instance:
        """One instance; NotFound if it does not exist."""
        return self._record(name).instance

    def _check_image(self, image: str) -> Image:
        with self._db.transaction() as session:
            found = image_store.find_image(session, image)
        if found is None:
            raise InvalidInput(
                f"image {image!r} does not exist; build it with `corral image build <recipe>` "
                "or pick one from `corral image list`",
                code="unknown_image",
                field="spec.image",
            )
        if found.state != ImageState.READY:
            raise Conflict(
                f"image {image!r} is {found.state.value}, not ready; wait for its build to "
                "finish (or build it again if it failed)",
                code="image_not_ready",
                field="spec.image",
            )
        return found

    def _check_capacity(self, spec: InstanceSpec, name: str) -> None:
        with self._db.transaction() as session:
            others = instance_store.running_allocation(session, excluding=name)
        check_capacity(spec, self._hosts.local_facts(), others)

    @staticmethod
    def _refuse_if_deleting(instance: Instance) -> None:
        if instance.deleting:
            raise Conflict(
                f"instance {instance.name!r} is being deleted; wait for the delete to finish",
                code="invalid_state",
            )

    def _change(
        self,
        kind: str,
        instance: Instance,
        spec: InstanceSpec,
        *,
        expected_generation: int | None = None,
        restart: bool = False,
        params: dict[str, Any] | None = None,
        message: str = "",
    ) -> tuple[Operation, Instance]:
        with self._db.transaction() as session:
            if spec.disks != instance.spec.disks:
                check_instance_disks(session, instance.name, spec.disks)
                volume_store.claim_volumes(session, instance.name, [d.volume for d in spec.disks])
            changed = instance_store.update_spec(
                session,
                instance.name,
                spec,
                expected_generation=expected_generation
                if expected_generation is not None
                else instance.generation,
                restart=restart,
            )
            op = operation_store.create_operation(
                session,
                kind,
                TARGET_KIND,
                instance.name,
                params={"generation": changed.generation, **(params or {})},
                message=message,
            )
        self._recorder.operation_created(op)
        self._enqueue(instance.name, True)
        return op, changed

    def _follow(
        self, kind: str, instance: Instance, params: dict[str, Any] | None = None
    ) -> Operation:
        """An operation that waits for the generation already asked for (nothing changes)."""
        caught_up = instance.status.observed_generation >= instance.generation
        if caught_up:
            return self._recorder.finished_operation(
                kind,
                TARGET_KIND,
                instance.name,
                f"instance {instance.name} is already {instance.status.state.value}",
                {},
            )
        with self._db.transaction() as session:
            op = operation_store.create_operation(
                session,
                kind,
                TARGET_KIND,
                instance.name,
                params={"generation": instance.generation, **(params or {})},
            )
        self._recorder.operation_created(op)
        self._enqueue(instance.name, False)
        return op

    # -- commands ----------------------------------------------------------------------------
    def create(self, body: InstanceCreate) -> Operation:
        """Store a new instance (it exists at once) and start a `create` operation.

        For a disk image, its root volume is recorded too (the reconcilers make both).
        """
        image = self._check_image(body.spec.image)
        self._check_capacity(body.spec, body.name)
        spec = body.spec
        root: tuple[str, VolumeSpec] | None = None
        if image.kind == DISK_IMAGE_KIND and body.from_snapshot is None:
            root = self._root_volume(body.name, image, body.root_disk or RootDisk())
            extra = [d for d in spec.disks if d.volume != root[0]]
            spec = spec.model_copy(
                update={"disks": [InstanceDisk(volume=root[0], boot=True), *extra]}
            )
        made: list[tuple[str, str, VolumeSpec, str | None]] = []  # name, uid, spec, owner
        with self._db.transaction() as session:
            if body.from_snapshot is not None:
                disks, new_volumes = self._snapshot_volumes(session, body.name, body.from_snapshot)
                spec = spec.model_copy(update={"disks": disks})
                instance = instance_store.create_instance(session, body.name, spec)
                for volume_name, volume_spec, owner in new_volumes:
                    check_new_volume(session, volume_name, volume_spec, SNAPSHOT_FIELDS)
                    uid = volume_store.create_volume(
                        session, volume_name, volume_spec, owner=owner, instance=owner
                    ).uid
                    made.append((volume_name, uid, volume_spec, owner))
            else:
                if root is not None:
                    check_new_volume(session, root[0], root[1], ROOT_DISK_FIELDS)
                check_instance_disks(session, body.name, spec.disks[1 if root else 0 :])
                instance = instance_store.create_instance(session, body.name, spec)
                if root is not None:
                    uid = volume_store.create_volume(
                        session, root[0], root[1], owner=body.name, instance=body.name
                    ).uid
                    made.append((root[0], uid, root[1], body.name))
            volume_store.claim_volumes(session, body.name, [d.volume for d in spec.disks])
            op = operation_store.create_operation(
                session,
                "create",
                TARGET_KIND,
                body.name,
                params={"generation": instance.generation},
                message="waiting for the controller",
            )
        self._recorder.publish(
            "instance.created",
            "instance",
            body.name,
            {"uid": instance.uid, "generation": 1, "spec": spec.model_dump(mode="json")},
        )
        for volume_name, uid, volume_spec, owner in made:
            data = {"uid": uid, "spec": volume_spec.model_dump(mode="json"), "owner": owner}
            self._recorder.publish("volume.created", "volume", volume_name, data)
            self._enqueue_volume(volume_name)
        self._recorder.operation_created(op)
        self._enqueue(body.name, False)
        return op

    @staticmethod
    def _snapshot_volumes(
        session: Session, name: str, source: FromSnapshot
    ) -> tuple[list[InstanceDisk], list[NewVolume]]:
        """The disks of an instance made from a snapshot, and the volumes to record for them
        (in order: a linked clone's shared base, when it does not exist yet, before the clone).
        """
        snapshot = snapshot_store.find_snapshot(session, source.instance, source.snapshot)
        if snapshot is None or snapshot.snapshot.state != SnapshotState.READY:
            state = "does not exist" if snapshot is None else f"is {snapshot.snapshot.state}"
            raise InvalidInput(
                f"snapshot {source.snapshot!r} of instance {source.instance!r} {state}; "
                f"`corral snapshot list {source.instance}` shows the ready ones",
                code="unknown_snapshot",
                field="from_snapshot.snapshot",
            )
        origin = instance_store.find_instance(session, source.instance)
        boot = {d.volume for d in origin.instance.spec.disks if d.boot} if origin else set()
        records = volume_store.find_volumes(session, snapshot.snapshot.volumes)
        disks: list[InstanceDisk] = []
        new_volumes: list[NewVolume] = []
        for n, volume in enumerate(snapshot.snapshot.volumes):
            record = records.get(volume)
            if record is None or record.deleting:
                raise InvalidInput(
                    f"volume {volume!r} of snapshot {source.snapshot!r} is gone",
                    code="unknown_volume",
                    field="from_snapshot.snapshot",
                )
            clone = f"{name}-{n}"
            base = f"{source.instance}-{source.snapshot}-{n}-base"
            for wanted, field in ((clone, "name"), (base, "from_snapshot")):
                problem = name_problem(wanted)
                if problem is not None:
                    raise InvalidInput(
                        f"volume name {wanted!r} {problem}; choose shorter names",
                        code="invalid_name",
                        field=field,
                    )
            from_snapshot = VolumeSource(
                kind=VolumeSourceKind.SNAPSHOT, volume=volume, snapshot=source.snapshot
            )
            pool = record.volume.spec.pool
            copy = VolumeSpec(pool=pool, format=VolumeFormat.QCOW2, source=from_snapshot)
            if not source.linked:
                new_volumes.append((clone, copy, name))
            else:
                existing = volume_store.find_volume(session, base)
                if existing is None:
                    new_volumes.append((base, copy, None))
                elif existing.deleting or existing.volume.spec.source != from_snapshot:
                    raise Conflict(
                        f"volume {base!r} exists and is not (or no longer) the base of "
                        f"snapshot {source.snapshot!r}; delete or rename it first",
                        code="already_exists",
                        field="from_snapshot",
                    )
                thin = VolumeSource(kind=VolumeSourceKind.VOLUME, volume=base)
                spec = VolumeSpec(pool=pool, format=VolumeFormat.QCOW2, source=thin)
                new_volumes.append((clone, spec, name))
            disks.append(InstanceDisk(volume=clone, boot=volume in boot))
        return disks, new_volumes

    @staticmethod
    def _root_volume(name: str, image: Image, root: RootDisk) -> tuple[str, VolumeSpec]:
        volume = root_volume_name(name)
        if len(volume) > MAX_NAME_LENGTH:
            longest = MAX_NAME_LENGTH - len(ROOT_SUFFIX)
            raise InvalidInput(
                f"name {name!r} is too long for an instance of a disk image: its root volume "
                f"{volume!r} needs a name of at most {MAX_NAME_LENGTH} characters, so the "
                f"instance's may have at most {longest}",
                code="invalid_name",
                field="name",
            )
        return volume, root_volume_spec(image, root)

    def patch(
        self, name: str, patch: InstanceSpecPatch, if_match: str | None
    ) -> tuple[Operation, Instance]:
        """Change some spec fields (optimistically, with If-Match); an `update` operation."""
        instance = self._record(name).instance
        expected = parse_if_match(if_match) if if_match else None
        if expected is not None and expected != instance.generation:
            raise PreconditionFailed(
                f'instance {name!r} changed since you read it (ETag now "{instance.generation}'
                f'", you sent "{expected}"); read it again and retry'
            )
        self._refuse_if_deleting(instance)
        spec = patch.apply(instance.spec)
        if spec == instance.spec:
            op = self._recorder.finished_operation(
                "update", TARGET_KIND, name, "nothing to change", {}
            )
            return op, instance
        self._check_capacity(spec, name)
        message = ""
        if instance.status.state == InstanceState.RUNNING and (
            (spec.cpus, spec.memory_mib, spec.machine)
            != (instance.spec.cpus, instance.spec.memory_mib, instance.spec.machine)
        ):
            message = "cpus, memory and machine changes apply at the next start"
        if spec.disks != instance.spec.disks:
            note = self._check_disk_change(instance, spec)
            message = f"{message}; {note}" if message and note else message or note
        params = {"note": message} if message else None
        return self._change("update", instance, spec, params=params, message=message)

    @staticmethod
    def _check_disk_change(instance: Instance, spec: InstanceSpec) -> str:
        """Refuse unplugging the boot disk of a running guest; say what waits for a restart."""
        if instance.spec.power != PowerState.RUNNING and instance.status.pid is None:
            return ""
        kept = {d.volume: d for d in spec.disks}
        for disk in instance.spec.disks:
            if disk.boot and disk.volume not in kept:
                raise Conflict(
                    f"volume {disk.volume!r} is the boot disk of running instance "
                    f"{instance.name!r}; stop the instance before removing it",
                    code="invalid_state",
                    field="spec.disks",
                )
        before = {d.volume: d for d in instance.spec.disks}
        if any(before[v] != d for v, d in kept.items() if v in before):
            return "boot and read_only changes of attached disks apply at the next start"
        return ""

    def set_disks(self, name: str, disks: list[InstanceDisk]) -> Operation:
        """Replace spec.disks (attach/detach actions): an `update` operation."""
        return self.patch(name, InstanceSpecPatch(disks=disks), None)[0]

    def delete(self, name: str) -> Operation:
        """Ask for deletion: the controller shuts the guest down, forgets it, drops the row.

        Deleting what is already being deleted returns the delete operation under way.
        """
        with self._db.transaction() as session:
            record = instance_store.get_instance(session, name)
            running = operation_store.running_operations(session, TARGET_KIND, name)
            for existing in running:
                if existing.operation.kind == "delete":
                    return existing.operation
            for volume in volume_store.volumes_of_instance(session, name):
                clones = volume_store.thin_clones_of(session, volume.name)
                if volume.volume.status.owner == name and clones:
                    raise Conflict(
                        f"instance {name!r} owns volume {volume.name!r}, the source of thin "
                        f"clone(s) {', '.join(clones[:10])}; delete them first",
                        code="volume_in_use",
                    )
            instance_store.mark_deleting(session, name)
            op = operation_store.create_operation(
                session,
                "delete",
                TARGET_KIND,
                name,
                params={
                    "generation": record.instance.generation,
                    "timeout_s": self._default_timeout_s,
                },
            )
        self._recorder.operation_created(op)
        self._enqueue(name, True)
        return op

    def start(self, name: str) -> Operation:
        """power=running; on a failed instance this retries (a new generation)."""
        instance = self._record(name).instance
        self._refuse_if_deleting(instance)
        if instance.spec.power == PowerState.RUNNING and instance.status.state not in (
            InstanceState.FAILED,
            InstanceState.STOPPED,
        ):
            return self._follow("start", instance)
        spec = instance.spec.model_copy(update={"power": PowerState.RUNNING})
        self._check_capacity(spec, name)
        return self._change("start", instance, spec)[0]

    def stop(self, name: str, *, force: bool, timeout_s: float | None) -> Operation:
        """power=stopped: ACPI power-off with a timeout, or at once with `force`."""
        instance = self._record(name).instance
        self._refuse_if_deleting(instance)
        params = {"force": force, "timeout_s": timeout_s or self._default_timeout_s}
        if instance.spec.power == PowerState.STOPPED:
            return self._follow("stop", instance, params)
        spec = instance.spec.model_copy(update={"power": PowerState.STOPPED})
        return self._change("stop", instance, spec, params=params)[0]

    def restart(self, name: str, *, force: bool, timeout_s: float | None) -> Operation:
        """Shut the guest down and boot it again; a stopped instance is simply started."""
        instance = self._record(name).instance
        self._refuse_if_deleting(instance)
        spec = instance.spec.model_copy(update={"power": PowerState.RUNNING})
        self._check_capacity(spec, name)
        params = {"force": force, "timeout_s": timeout_s or self._default_timeout_s}
        return self._change("restart", instance, spec, restart=True, params=params)[0]

    # -- pass-through to the guest ---------------------------------------------------------
    def _require_running(self, name: str, what: str) -> Instance:
        instance = self._record(name).instance
        if instance.deleting or instance.status.state != InstanceState.RUNNING:
            state = "deleting" if instance.deleting else instance.status.state.value
            hint = f"start it first (`corral start {name}`)" if not instance.deleting else ""
            raise Conflict(
                f"instance {name!r} is {state}; {what} needs a running guest"
                + (f": {hint}" if hint else ""),
                code="invalid_state",
            )
        return instance

    async def exec(
        self, name: str, command: list[str], timeout_s: float, input_text: str | None
    ) -> ExecResult:
        """Run a command in the guest through its guest agent."""
        self._require_running(name, "exec")
        request = ExecRequest(name=name, command=command, timeout_s=timeout_s, input=input_text)
        return await self._agent.exec(request)

    async def open_console(self, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A byte stream to the guest's serial console."""
        self._require_running(name, "the console")
        return await self._agent.open_console(name)

    async def console_log(self, name: str, max_bytes: int) -> bytes:
        """The last `max_bytes` the guest printed (also after it stopped)."""
        self._record(name)
        try:
            return await self._agent.console_log(name, max_bytes)
        except NotFound:
            return b""
