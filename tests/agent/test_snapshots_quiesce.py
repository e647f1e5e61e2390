"""Quiescing around a snapshot, against a small fake guest agent: a guest that can freeze is
frozen and thawed; one that cannot, or has no agent, gets a crash-consistent snapshot quickly;
a freeze whose answer never comes is thawed anyway; a guest left frozen is thawed."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.agent.compute.qemu import snapshots
from corral.agent.compute.qemu.guest_agent import GuestAgent
from tests.agent.test_qemu_guest_agent import FakeQemuGa


@dataclass
class FreezingGa(FakeQemuGa):
    """qemu-ga with guest-fsfreeze-*: `freeze` is "ok", "unsupported" or "no-answer" (it
    freezes but its answer never comes)."""

    freeze: str = "ok"
    state: str = "thawed"

    def _answer(self, request: dict[str, Any]) -> bytes | None:
        command = request["execute"]
        if command == "guest-fsfreeze-status":
            return json.dumps({"return": self.state}).encode() + b"\n"
        if command == "guest-fsfreeze-freeze":
            if self.freeze == "unsupported":
                desc = "Command guest-fsfreeze-freeze has been disabled"
                error = {"error": {"class": "GenericError", "desc": desc}}
                return json.dumps(error).encode() + b"\n"
            self.state = "frozen"
            return None if self.freeze == "no-answer" else b'{"return": 1}\n'
        if command == "guest-fsfreeze-thaw":
            self.state = "thawed"
            return b'{"return": 1}\n'
        return super()._answer(request)

    def commands(self) -> list[str]:
        return [r["execute"] for r in self.requests if r["execute"] != "guest-sync-delimited"]


@pytest.fixture
async def ga(short_dir: Path) -> AsyncIterator[FreezingGa]:
    server = FreezingGa(short_dir / "qga.sock")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(ga: FreezingGa) -> AsyncIterator[GuestAgent]:
    agent = GuestAgent("web1", ga.path)
    yield agent
    await agent.close()


async def test_a_guest_that_can_freeze_is_frozen_then_thawed(
    ga: FreezingGa, client: GuestAgent
) -> None:
    assert await snapshots._freeze(client, "web1")
    assert ga.state == "frozen"
    await snapshots._thaw(client, "web1")
    assert ga.state == "thawed"


async def test_a_guest_that_cannot_freeze_is_snapshotted_unquiesced(
    ga: FreezingGa, client: GuestAgent
) -> None:
    ga.freeze = "unsupported"
    assert not await snapshots._freeze(client, "web1")
    assert ga.state == "thawed" and "guest-fsfreeze-thaw" not in ga.commands()


async def test_a_guest_without_an_agent_costs_only_the_probe(
    ga: FreezingGa, client: GuestAgent
) -> None:
    ga.silent = True
    started = time.monotonic()
    assert not await snapshots._freeze(client, "web1")
    assert time.monotonic() - started < snapshots._AGENT_PROBE_S + 1.0
    assert "guest-fsfreeze-freeze" not in ga.commands()


async def test_a_freeze_whose_answer_is_lost_is_thawed_anyway(
    ga: FreezingGa, client: GuestAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "_FREEZE_TIMEOUT_S", 0.3)
    ga.freeze = "no-answer"
    assert not await snapshots._freeze(client, "web1")
    assert ga.state == "thawed"


async def test_a_guest_left_frozen_is_thawed_by_the_recovery_call(
    ga: FreezingGa, client: GuestAgent
) -> None:
    ga.state = "frozen"
    await snapshots.thaw_if_frozen(client, "web1")
    assert ga.state == "thawed"
    await snapshots.thaw_if_frozen(client, "web1")  # thawed already: nothing to do
    assert ga.commands().count("guest-fsfreeze-thaw") == 1
