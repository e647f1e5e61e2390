"""The async core of the client: every /v1 endpoint as a typed method, one request path.

All logic lives here; `CorralClient` (sync.py) only runs these coroutines on a private loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from corral import __version__, paths
from corral.client.console import ConsoleSession, open_console
from corral.client.problems import (
    OPERATION_TIMEOUT,
    bad_response,
    error_from_problem,
    operation_error,
    transport_error,
)
from corral.client.settings import normalize_url, resolve_settings
from corral.client.snapshots import SnapshotCalls
from corral.client.sse import SSEDecoder
from corral.errors import CorralError
from corral.model import Event, Host, Image, Instance, Machine, OnCrash, Operation, PowerState
from corral.model.instance import FromSnapshot, RootDisk
from corral.model.rpc import ExecResult
from corral.model.storage import (
    InstanceDisk,
    Pool,
    PoolDriver,
    Volume,
    VolumeFormat,
    VolumeSource,
)

M = TypeVar("M", bound=BaseModel)
OperationCallback = Callable[[Operation], None]

DEFAULT_TIMEOUT_S = 30.0
# Long-poll slices: short enough that progress reaches the caller about once a second.
_WAIT_SLICE_S = 1
# Extra time on top of server-side waits (long-poll, exec) before the HTTP read gives up.
_SLACK_S = 15.0


def _name(value: str) -> str:
    """Quote a name for a path segment, so a stray '/' reaches the server as data, not a path."""
    return quote(value, safe="")


class AsyncCorralClient(SnapshotCalls):
    """Typed async client for the Corral REST API (docs/api.md); snapshot and backup calls
    come from SnapshotCalls (snapshots.py).

    `transport` is the seam for tests (httpx.MockTransport, httpx.ASGITransport). Errors are
    CorralError subclasses carrying the server's stable `code` and `field`.
    """

    def __init__(
        self,
        url: str = paths.DEFAULT_URL,
        token: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        token_source: str | None = None,
    ) -> None:
        self.url = normalize_url(url)
        self.token = token
        self.token_source = token_source or ("the caller" if token else "no token was given")
        headers = {"Accept": "application/json", "User-Agent": f"corral-client/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, transport=transport, timeout=timeout
        )
        # A child logger per server; dots would make it a hierarchy, so they go.
        server = self.url.split("://", 1)[1].replace(".", "-")
        self._log = logging.getLogger("corral.client").getChild(server)

    @classmethod
    def from_env(
        cls,
        url: str | None = None,
        data_dir: Path | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Self:
        """A client for `--url`/`CORRAL_URL` with the token from `CORRAL_TOKEN` or the data dir."""
        settings = resolve_settings(url, data_dir)
        return cls(
            settings.url,
            settings.token,
            transport=transport,
            token_source=settings.token_source,
        )

    def __repr__(self) -> str:
        return f"AsyncCorralClient(url={self.url!r}, token_from={self.token_source!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- the one request path -------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        self._log.debug("%s %s", method, path)
        try:
            response = await self._http.request(
                method,
                path,
                json=json,
                params=params,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as err:
            raise transport_error(self.url, method, path, err) from err
        if response.is_error:
            raise error_from_problem(
                response.status_code,
                response.content,
                method=method,
                path=path,
                hint=self._auth_hint() if response.status_code == 401 else "",
            )
        return response

    def _auth_hint(self) -> str:
        if self.token is None:
            return (
                f"no API token was sent ({self.token_source}); set CORRAL_TOKEN, or pass "
                "--data-dir pointing at the server's data dir (its `token` file holds the token)"
            )
        return (
            f"the token from {self.token_source} was rejected; it must match the `token` file "
            "in the data dir of the server you are talking to"
        )

    def _parse(self, model: type[M], response: httpx.Response) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as err:
            request = response.request
            raise bad_response(self.url, request.method, request.url.path, err) from err

    def _parse_items(self, model: type[M], response: httpx.Response) -> list[M]:
        request = response.request
        try:
            items = response.json()["items"]
            return [model.model_validate(item) for item in items]
        except (ValueError, KeyError, TypeError, ValidationError) as err:
            raise bad_response(self.url, request.method, request.url.path, err) from err

    async def _get(self, path: str, model: type[M], **kwargs: Any) -> M:
        return self._parse(model, await self._request("GET", path, **kwargs))

    async def _list(self, path: str, model: type[M]) -> list[M]:
        return self._parse_items(model, await self._request("GET", path))

    async def _operation(self, method: str, path: str, body: Any = None) -> Operation:
        return self._parse(Operation, await self._request(method, path, json=body))

    async def _patch(self, path: str, body: Any, if_match: str | None) -> Operation:
        headers = {"If-Match": if_match} if if_match else None
        return self._parse(
            Operation, await self._request("PATCH", path, json=body, headers=headers)
        )

    # -- health -----------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """GET /healthz: `{"status": "ok"}` when the server is up (no token needed)."""
        response = await self._request("GET", "/healthz")
        body: dict[str, Any] = response.json()
        return body

    # -- instances --------------------------------------------------------------------------

    async def list_instances(self) -> list[Instance]:
        """All instances."""
        return await self._list("/v1/instances", Instance)

    async def get_instance(self, name: str) -> Instance:
        """One instance; its `etag` property is what `update_instance(if_match=...)` wants."""
        return await self._get(f"/v1/instances/{_name(name)}", Instance)

    async def create_instance(
        self,
        name: str,
        *,
        image: str,
        cpus: int | None = None,
        memory_mib: int | None = None,
        power: PowerState | None = None,
        machine: Machine | None = None,
        on_crash: OnCrash | None = None,
        disks: Sequence[InstanceDisk | str] | None = None,
        root_disk: RootDisk | None = None,
        ssh_keys: Sequence[str] | None = None,
        user_data: str | None = None,
        from_snapshot: FromSnapshot | None = None,
    ) -> Operation:
        """Create an instance (it exists at once); returns the `create` operation.

        `disks` are volumes to attach in device order (a name is a plain read-write data disk);
        `root_disk` sizes/places the root volume of a disk image; `ssh_keys`/`user_data` reach
        cloud-init images; `from_snapshot` makes its disks from a snapshot of another instance
        (full copies, or linked clones of a shared base), in place of `disks` and a root volume.
        Unset fields are left out so the server's defaults apply and the server alone validates.
        """
        spec = _drop_none(
            image=image,
            cpus=cpus,
            memory_mib=memory_mib,
            power=power,
            machine=machine,
            on_crash=on_crash,
            disks=_disks(disks),
            ssh_keys=list(ssh_keys) if ssh_keys is not None else None,
            user_data=user_data,
        )
        body: dict[str, Any] = {"name": name, "spec": spec}
        if root_disk is not None:
            body["root_disk"] = root_disk.model_dump(mode="json", exclude_unset=True)
        if from_snapshot is not None:
            body["from_snapshot"] = from_snapshot.model_dump(mode="json")
        return await self._operation("POST", "/v1/instances", body)

    async def update_instance(
        self,
        name: str,
        *,
        cpus: int | None = None,
        memory_mib: int | None = None,
        power: PowerState | None = None,
        machine: Machine | None = None,
        on_crash: OnCrash | None = None,
        disks: Sequence[InstanceDisk | str] | None = None,
        if_match: str | None = None,
    ) -> Operation:
        """Change some spec fields; with `if_match` (an ETag) a concurrent change raises 412.

        `disks` replaces the whole list; on a running guest the difference is hot-plugged.
        """
        spec = _drop_none(
            cpus=cpus,
            memory_mib=memory_mib,
            power=power,
            machine=machine,
            on_crash=on_crash,
            disks=_disks(disks),
        )
        return await self._patch(f"/v1/instances/{_name(name)}", {"spec": spec}, if_match)

    async def delete_instance(self, name: str) -> Operation:
        """Delete an instance; a running guest is shut down first."""
        return await self._operation("DELETE", f"/v1/instances/{_name(name)}")

    async def start_instance(self, name: str) -> Operation:
        """Power an instance on."""
        return await self._operation("POST", f"/v1/instances/{_name(name)}/actions/start")

    async def stop_instance(
        self, name: str, *, force: bool = False, timeout_s: float | None = None
    ) -> Operation:
        """Shut down cleanly (`timeout_s` of grace before power-off), or at once with `force`."""
        body = _drop_none(force=force, timeout_s=timeout_s)
        return await self._operation("POST", f"/v1/instances/{_name(name)}/actions/stop", body)

    async def restart_instance(self, name: str) -> Operation:
        """Stop, then start again."""
        return await self._operation("POST", f"/v1/instances/{_name(name)}/actions/restart")

    async def exec_instance(
        self,
        name: str,
        command: Sequence[str],
        *,
        timeout_s: float = 60.0,
        input: str | None = None,
    ) -> ExecResult:
        """Run `command` in the guest through its guest agent and wait for it to finish."""
        response = await self._request(
            "POST",
            f"/v1/instances/{_name(name)}/actions/exec",
            json={"command": list(command), "timeout_s": timeout_s, "input": input},
            timeout=timeout_s + _SLACK_S,
        )
        return self._parse(ExecResult, response)

    async def console_log(self, name: str, *, max_bytes: int | None = None) -> bytes:
        """The last `max_bytes` the guest printed on its serial console (raw bytes)."""
        params = {"bytes": max_bytes} if max_bytes is not None else None
        response = await self._request(
            "GET", f"/v1/instances/{_name(name)}/console/log", params=params
        )
        return response.content

    def console(self, name: str) -> AbstractAsyncContextManager[ConsoleSession]:
        """`async with client.console("vm1") as session:` the interactive serial console."""
        return open_console(self.url, name, self.token)

    # -- images -----------------------------------------------------------------------------

    async def list_images(self) -> list[Image]:
        """All images, built or building."""
        return await self._list("/v1/images", Image)

    async def get_image(self, name: str) -> Image:
        """One image."""
        return await self._get(f"/v1/images/{_name(name)}", Image)

    async def build_image(self, recipe: str, *, name: str | None = None) -> Operation:
        """Build `recipe` into an image called `name` (default: the recipe's name)."""
        return await self._operation("POST", "/v1/images", {"recipe": recipe, "name": name})

    async def delete_image(self, name: str) -> None:
        """Delete an image; Conflict (`image_in_use`) while instances use it."""
        await self._request("DELETE", f"/v1/images/{_name(name)}")

    async def list_recipes(self) -> list[str]:
        """Names of the recipes the server can build."""
        response = await self._request("GET", "/v1/recipes")
        try:
            return [str(item) for item in response.json()["items"]]
        except (ValueError, KeyError, TypeError) as err:
            raise bad_response(self.url, "GET", "/v1/recipes", err) from err

    # -- storage: pools -----------------------------------------------------------------------

    async def list_pools(self) -> list[Pool]:
        """All storage pools, with capacity and use."""
        return await self._list("/v1/pools", Pool)

    async def get_pool(self, name: str) -> Pool:
        """One pool."""
        return await self._get(f"/v1/pools/{_name(name)}", Pool)

    async def create_pool(
        self,
        name: str,
        *,
        driver: PoolDriver | None = None,
        path: str | None = None,
        size_bytes: int | None = None,
    ) -> Operation:
        """Create a pool (`path`: a directory or btrfs mount on the server's host; `size_bytes`:
        the loop file of a btrfs pool without `path`); returns the `pool-create` operation."""
        spec = _drop_none(driver=driver, path=path, size_bytes=size_bytes)
        return await self._operation("POST", "/v1/pools", {"name": name, "spec": spec})

    async def delete_pool(self, name: str) -> Operation:
        """Delete an empty pool; Conflict (`pool_not_empty`) while it holds volumes."""
        return await self._operation("DELETE", f"/v1/pools/{_name(name)}")

    # -- storage: volumes -------------------------------------------------------------------

    async def list_volumes(self, *, pool: str | None = None) -> list[Volume]:
        """All volumes, or those of one pool."""
        params = {"pool": pool} if pool is not None else None
        return self._parse_items(Volume, await self._request("GET", "/v1/volumes", params=params))

    async def get_volume(self, name: str) -> Volume:
        """One volume; its ETag (for `resize_volume(if_match=...)`) is `volume_etag(volume)`."""
        return await self._get(f"/v1/volumes/{_name(name)}", Volume)

    async def create_volume(
        self,
        name: str,
        *,
        size_bytes: int | None = None,
        pool: str | None = None,
        format: VolumeFormat | None = None,
        source: VolumeSource | None = None,
    ) -> Operation:
        """Create a volume: blank (needs `size_bytes`), or from `source` (a thin clone of an
        image or volume, or a full copy); returns the `volume-create` operation."""
        spec = _drop_none(pool=pool, size_bytes=size_bytes, format=format)
        if source is not None:
            spec["source"] = source.model_dump(mode="json", exclude_none=True)
        return await self._operation("POST", "/v1/volumes", {"name": name, "spec": spec})

    async def resize_volume(
        self, name: str, size_bytes: int, *, if_match: str | None = None
    ) -> Operation:
        """Grow a volume to `size_bytes` (online when its guest runs); InvalidInput
        (`shrink_refused`) when smaller; with `if_match` a concurrent change raises 412."""
        body = {"spec": {"size_bytes": size_bytes}}
        return await self._patch(f"/v1/volumes/{_name(name)}", body, if_match)

    async def delete_volume(self, name: str) -> Operation:
        """Delete a volume; Conflict (`volume_attached`, `volume_in_use`) while it is used."""
        return await self._operation("DELETE", f"/v1/volumes/{_name(name)}")

    async def attach_volume(self, name: str, instance: str) -> Operation:
        """Attach a volume to an instance as its next disk (hot-plugged when it runs)."""
        path = f"/v1/volumes/{_name(name)}/actions/attach"
        return await self._operation("POST", path, {"instance": instance})

    async def detach_volume(self, name: str) -> Operation:
        """Detach a volume from whatever instance has it (hot-unplugged when it runs)."""
        return await self._operation("POST", f"/v1/volumes/{_name(name)}/actions/detach", {})

    # -- hosts ------------------------------------------------------------------------------

    async def list_hosts(self) -> list[Host]:
        """The hosts that run guests, with capacity and acceleration."""
        return await self._list("/v1/hosts", Host)

    async def get_host(self, name: str) -> Host:
        """One host."""
        return await self._get(f"/v1/hosts/{_name(name)}", Host)

    # -- operations -------------------------------------------------------------------------

    async def list_operations(self) -> list[Operation]:
        """Recent operations, newest first."""
        return await self._list("/v1/operations", Operation)

    async def get_operation(self, op_id: str, *, wait: int | None = None) -> Operation:
        """One operation; with `wait` the server holds the answer up to that many seconds."""
        params = {"wait": wait} if wait is not None else None
        timeout = wait + _SLACK_S if wait is not None else None
        return await self._get(
            f"/v1/operations/{_name(op_id)}", Operation, params=params, timeout=timeout
        )

    async def wait_operation(
        self,
        op_id: str,
        *,
        timeout: float = 120.0,
        on_update: OperationCallback | None = None,
        check: bool = True,
    ) -> Operation:
        """Long-poll an operation until it is done; `on_update` sees every state fetched.

        Polls in one-second slices so progress and messages reach `on_update` while it runs.
        With `check`, a failed operation raises the CorralError its error code stands for.
        Raises CorralError `operation_timeout` when still running after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            op = await self.get_operation(op_id, wait=_WAIT_SLICE_S)
            if on_update is not None:
                on_update(op)
            if op.done:
                break
            if time.monotonic() >= deadline:
                last = f", last said: {op.message!r}" if op.message else ""
                raise CorralError(
                    f"{op.kind} of {op.target_kind} {op.target} is still running after "
                    f"{timeout:g} s (operation {op.id}{last}). It goes on in the server: follow "
                    f"it with `corral operations {op.id}`, or allow more time with --timeout",
                    code=OPERATION_TIMEOUT,
                )
        error = operation_error(op) if check else None
        if error is not None:
            raise error
        return op

    # -- events -----------------------------------------------------------------------------

    async def events(
        self,
        *,
        since: int | None = None,
        reconnect: bool = True,
        max_retries: int = 8,
        idle_timeout: float = 60.0,
    ) -> AsyncGenerator[Event, None]:
        """Follow /v1/events; after a dropped stream, resume where it broke (Last-Event-ID).

        A first connection that fails raises at once (usually `server_unreachable`); a stream
        that worked is retried with backoff, up to `max_retries` failed reconnects in a row.
        A stream silent for `idle_timeout` seconds is reopened, so a dead peer cannot hang us.
        """
        decoder = SSEDecoder()
        failures = 0
        connected_once = False
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            params: dict[str, Any] = {}
            if decoder.last_event_id is not None:
                headers["Last-Event-ID"] = decoder.last_event_id
            elif since is not None:
                params["since"] = since
            timeout = httpx.Timeout(DEFAULT_TIMEOUT_S, read=idle_timeout)
            try:
                async with self._http.stream(
                    "GET", "/v1/events", params=params, headers=headers, timeout=timeout
                ) as response:
                    if response.is_error:
                        await response.aread()
                        raise error_from_problem(
                            response.status_code,
                            response.content,
                            method="GET",
                            path="/v1/events",
                            hint=self._auth_hint() if response.status_code == 401 else "",
                        )
                    connected_once, failures = True, 0
                    async for line in response.aiter_lines():
                        sse = decoder.feed(line)
                        if sse is not None:
                            yield self._event(sse.data)
            except httpx.TransportError as err:
                # Only a stream that once worked is worth resuming; a first failure is final.
                if not (reconnect and connected_once) or failures >= max_retries:
                    raise transport_error(self.url, "GET", "/v1/events", err) from err
                if isinstance(err, httpx.ReadTimeout):
                    self._log.debug("event stream idle for %.0f s; reopening", idle_timeout)
                    continue
                failures += 1
            if not reconnect:
                return
            delay = (decoder.retry_ms or 1000) / 1000 * min(2 ** max(failures - 1, 0), 8)
            self._log.debug("event stream ended; reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)

    def _event(self, data: str) -> Event:
        try:
            return Event.model_validate_json(data)
        except ValidationError as err:
            raise bad_response(self.url, "GET", "/v1/events", err) from err


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _disks(disks: Sequence[InstanceDisk | str] | None) -> list[dict[str, Any]] | None:
    """`spec.disks` as JSON: only what differs from the defaults, so the server's apply."""
    if disks is None:
        return None
    return [
        {"volume": disk}
        if isinstance(disk, str)
        else disk.model_dump(mode="json", exclude_defaults=True)
        for disk in disks
    ]


def volume_etag(volume: Volume) -> str:
    """The ETag the server gives a volume (`"<generation>"`, docs/api.md), for If-Match."""
    return f'"{volume.generation}"'
