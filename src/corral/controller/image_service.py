"""Image builds run in the background on the agent; progress flows into the Operation.

A build is recorded as an Image in state `building` with an `image-build` operation; when
the agent is done the image becomes `ready` (or `failed`, with the builder's message), and
`image.built` is published. A build cut short by a server stop is marked failed at the next
start, since its half-made files cannot be trusted.
"""

from __future__ import annotations

import asyncio
import logging
import time

from corral.bus.local import HostAgent
from corral.controller.recorder import Recorder
from corral.errors import Conflict, CorralError, InvalidInput
from corral.model.image import Image, ImageState
from corral.model.names import some_names, validate_name
from corral.model.operation import Operation, OperationError
from corral.store import images as image_store
from corral.store import instances as instance_store
from corral.store import operations as operation_store
from corral.store import volumes as volume_store

log = logging.getLogger(__name__)

TARGET_KIND = "image"
_PROGRESS_INTERVAL_S = 0.25


class ImageService:
    """Builds, lists and deletes images through the local agent."""

    def __init__(self, recorder: Recorder, agent: HostAgent) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._agent = agent
        self._builds: dict[str, asyncio.Task[None]] = {}

    def __repr__(self) -> str:
        return f"ImageService(building={sorted(self._builds)})"

    def recipes(self) -> list[str]:
        """Recipes the local host can build."""
        return sorted(self._agent.recipes())

    def recover(self) -> None:
        """Fail builds that a previous server process did not finish."""
        message = "the server stopped during this build; build the image again"
        with self._db.transaction() as session:
            names = image_store.fail_unfinished_builds(session, message)
            stale = operation_store.all_running_operations(session, TARGET_KIND)
        for record in stale:
            self._recorder.finish(
                record.operation.id,
                error=OperationError(code="image_build_failed", message=message),
            )
        for name in names:
            log.warning("image %s: %s", name, message)

    def start_build(self, recipe: str, name: str | None) -> Operation:
        """Record the image as building and start the build in the background."""
        name = validate_name(name or recipe, "name")
        known = self.recipes()
        if recipe not in known:
            raise InvalidInput(
                f"recipe {recipe!r} is unknown; known recipes: {', '.join(known) or 'none'}",
                code="unknown_recipe",
                field="recipe",
            )
        with self._db.transaction() as session:
            existing = image_store.find_image(session, name)
            if existing is not None and existing.state != ImageState.FAILED:
                raise Conflict(
                    f"image {name!r} already exists ({existing.state.value}); delete it first "
                    "or build under another name (`--name`)",
                    code="already_exists",
                    field="name",
                )
            image_store.start_image_build(session, name, recipe)
            op = operation_store.create_operation(
                session,
                "image-build",
                TARGET_KIND,
                name,
                params={"recipe": recipe},
                message=f"building {name!r} from recipe {recipe!r}",
            )
        self._recorder.operation_created(op)
        task = asyncio.get_running_loop().create_task(
            self._build(op.id, recipe, name), name=f"image-build-{name}"
        )
        self._builds[name] = task
        task.add_done_callback(lambda _t: self._builds.pop(name, None))
        return op

    async def _build(self, op_id: str, recipe: str, name: str) -> None:
        last_sent = 0.0

        def progress(fraction: float, message: str) -> None:
            nonlocal last_sent
            now = time.monotonic()
            if now - last_sent < _PROGRESS_INTERVAL_S and fraction < 1.0:
                return
            last_sent = now
            self._recorder.progress([op_id], min(fraction, 0.99), message)

        started = time.monotonic()
        try:
            artifact = await self._agent.build_image(recipe, name, progress)
        except asyncio.CancelledError:
            self._fail(op_id, name, "the server stopped during this build; build it again")
            raise
        except CorralError as err:
            code = err.code if err.code in ("unknown_recipe", "image_build_failed") else None
            self._fail(op_id, name, err.message, code or "image_build_failed")
            return
        except Exception as err:  # a builder bug must still end the operation
            log.exception("image build %s failed unexpectedly", name)
            self._fail(op_id, name, f"the build failed unexpectedly: {err}")
            return
        with self._db.transaction() as session:
            image = image_store.mark_image_ready(session, artifact)
        document = image.model_dump(mode="json")
        self._recorder.publish("image.built", "image", name, document)
        seconds = time.monotonic() - started
        self._recorder.finish(
            op_id, message=f"image {name} is ready ({seconds:.1f}s)", result={"image": document}
        )

    def _fail(self, op_id: str, name: str, message: str, code: str = "image_build_failed") -> None:
        with self._db.transaction() as session:
            image_store.mark_image_failed(session, name, message)
        self._recorder.finish(op_id, error=OperationError(code=code, message=message))

    def list(self) -> list[Image]:
        """Every image."""
        with self._db.transaction() as session:
            return image_store.list_images(session)

    def get(self, name: str) -> Image:
        """One image; NotFound if it does not exist."""
        with self._db.transaction() as session:
            return image_store.get_image(session, name)

    async def delete(self, name: str) -> None:
        """Remove an image's files and record; refused while building or in use."""
        image = self.get(name)
        if image.state == ImageState.BUILDING:
            raise Conflict(
                f"image {name!r} is being built; wait for the build to finish, then delete it",
                code="invalid_state",
            )
        with self._db.transaction() as session:
            users = instance_store.instances_using_image(session, name)
            clones = volume_store.volumes_using_image(session, name)
        if clones:
            shown = some_names(clones)
            raise Conflict(
                f"image {name!r} is the base of {len(clones)} volume(s): {shown}; delete them "
                "first",
                code="image_in_use",
            )
        if users:
            shown = some_names(users)
            raise Conflict(
                f"image {name!r} is used by {len(users)} instance(s): {shown}; delete them first",
                code="image_in_use",
            )
        await self._agent.delete_image(name)
        with self._db.transaction() as session:
            image_store.delete_image_record(session, name)
        self._recorder.publish("image.deleted", "image", name, {})

    async def stop(self) -> None:
        """Cancel running builds (they are marked failed)."""
        tasks = list(self._builds.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
