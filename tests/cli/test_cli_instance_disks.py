"""`corral create` with disks, SSH keys and user-data; `corral show` with the disks listed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from corral.client.testing import CannedAPI, json_response, problem, sample_volume
from corral.model import Instance, Operation
from corral.model.instance import MAX_USER_DATA_BYTES
from corral.model.storage import InstanceDisk

MakeOp = Callable[..., Operation]
MakeInst = Callable[..., Instance]
GIB = 1024**3
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk5 me@laptop"


def plain(output: str) -> str:
    """Typer's usage-error box, unwrapped: words in one line, without the box borders."""
    return " ".join(output.replace("│", " ").split())


@pytest.fixture
def created(api: CannedAPI, make_operation: MakeOp, make_instance: MakeInst) -> CannedAPI:
    """Answers for a create that succeeds."""
    api.answer("POST", "/v1/instances", json_response(make_operation(), 202))
    api.answer("GET", "/v1/operations/op-1", json_response(make_operation(state="succeeded")))
    api.answer("GET", "/v1/instances/vm1", json_response(make_instance(state="running")))
    return api


def sent_spec(api: CannedAPI) -> Any:
    return json.loads(api.sent("POST", "/v1/instances")[0].content)


def test_create_with_disk_pool_attach_keys_and_user_data_sends_them_all(
    corral: Any, created: CannedAPI, tmp_path: Path
) -> None:
    pub = tmp_path / "id_ed25519.pub"
    pub.write_text(f"# my laptop\n{KEY}\n\n")
    seed = tmp_path / "user-data.yaml"
    seed.write_text("#cloud-config\npackages: [htop]\n")

    result = corral(
        "create", "vm1", "--image", "debian-12",
        "--disk", "8G", "--pool", "fast",
        "--attach", "data", "--attach", "logs:ro",
        "--ssh-key", f"@{pub}", "--ssh-key", "ssh-rsa AAAAB3NzaC1yc2E= ops",
        "--user-data", str(seed),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert sent_spec(created) == {
        "name": "vm1",
        "spec": {
            "image": "debian-12",
            "disks": [{"volume": "data"}, {"volume": "logs", "read_only": True}],
            "ssh_keys": [KEY, "ssh-rsa AAAAB3NzaC1yc2E= ops"],
            "user_data": "#cloud-config\npackages: [htop]\n",
        },
        "root_disk": {"size_bytes": 8 * GIB, "pool": "fast"},
    }


@pytest.mark.parametrize(
    ("args", "root_disk"),
    [
        (["--disk", "2G"], {"size_bytes": 2 * GIB}),
        (["--pool", "fast"], {"pool": "fast"}),
        ([], None),
    ],
)
def test_root_disk_carries_only_what_was_given(
    corral: Any, created: CannedAPI, args: list[str], root_disk: Any
) -> None:
    result = corral("create", "vm1", "--image", "debian-12", *args)
    assert result.exit_code == 0, result.output
    assert sent_spec(created).get("root_disk") == root_disk


def test_ssh_key_file_under_home_is_expanded(
    corral: Any, created: CannedAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519.pub").write_text(KEY + "\n")
    result = corral("create", "vm1", "--image", "debian-12", "--ssh-key", "@~/.ssh/id_ed25519.pub")
    assert result.exit_code == 0, result.output
    assert sent_spec(created)["spec"]["ssh_keys"] == [KEY]


def test_user_data_from_stdin(corral: Any, created: CannedAPI) -> None:
    result = corral(
        "create", "vm1", "--image", "debian-12", "--user-data", "-", input="#cloud-config\n"
    )
    assert result.exit_code == 0, result.output
    assert sent_spec(created)["spec"]["user_data"] == "#cloud-config\n"


def test_user_data_too_big_is_a_usage_error(corral: Any, api: CannedAPI, tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_USER_DATA_BYTES + 1))
    result = corral("create", "vm1", "--image", "debian-12", "--user-data", str(big))
    assert result.exit_code == 2
    assert "--user-data" in result.output and "larger than 64 KiB" in plain(result.output)
    assert api.requests == []


def test_user_data_of_exactly_64_kib_is_sent(
    corral: Any, created: CannedAPI, tmp_path: Path
) -> None:
    full = tmp_path / "full.yaml"
    full.write_bytes(b"#" * MAX_USER_DATA_BYTES)
    result = corral("create", "vm1", "--image", "debian-12", "--user-data", str(full))
    assert result.exit_code == 0, result.output
    assert len(sent_spec(created)["spec"]["user_data"]) == MAX_USER_DATA_BYTES


@pytest.mark.parametrize(
    ("make_args", "why"),
    [
        (lambda d: ["--user-data", str(d / "missing.yaml")], "cannot read"),
        (lambda d: ["--user-data", str(d)], "cannot read"),
        (lambda d: ["--user-data", str(d / "binary")], "not UTF-8"),
        (lambda d: ["--ssh-key", "not-a-key"], "not an SSH public key"),
        (lambda d: ["--ssh-key", str(d / "id.pub")], "write @{d}/id.pub"),
        (lambda d: ["--ssh-key", f"@{d / 'id'}"], "holds a private key"),
        (lambda d: ["--ssh-key", f"@{d / 'empty.pub'}"], "no SSH public key"),
        (lambda d: ["--ssh-key", f"@{d / 'missing.pub'}"], "cannot read"),
        (lambda d: ["--disk", "huge"], "not a size"),
        (lambda d: ["--attach", "data:rx"], "not VOLUME or VOLUME:ro"),
    ],
)
def test_bad_cloud_init_and_disk_options_are_usage_errors(
    corral: Any, api: CannedAPI, tmp_path: Path, make_args: Callable[[Path], list[str]], why: str
) -> None:
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "id.pub").write_text(KEY + "\n")
    (tmp_path / "id").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n")
    (tmp_path / "empty.pub").write_text("# nothing here\n")
    result = corral("create", "vm1", "--image", "debian-12", *make_args(tmp_path))
    assert result.exit_code == 2, result.output
    assert why.format(d=tmp_path) in plain(result.output)
    assert api.requests == []


def test_attach_of_a_volume_in_use_prints_the_server_error(corral: Any, api: CannedAPI) -> None:
    api.answer(
        "POST",
        "/v1/instances",
        problem(409, "volume_attached", "volume data is attached to vm2", "spec.disks"),
    )
    result = corral("create", "vm1", "--image", "debian-12", "--attach", "data")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: volume data is attached to vm2 (code: volume_attached, field: spec.disks)"
    )


def test_show_lists_the_disks_with_device_size_and_pool(
    corral: Any, api: CannedAPI, make_instance: MakeInst
) -> None:
    inst = make_instance("vm1", state="running")
    inst.spec.disks = [
        InstanceDisk(volume="vm1-root", boot=True),
        InstanceDisk(volume="data", read_only=True),
        InstanceDisk(volume="gone"),
    ]
    api.answer("GET", "/v1/instances/vm1", json_response(inst))
    api.answer(
        "GET",
        "/v1/volumes",
        json_response(
            [
                sample_volume("vm1-root", pool="fast", state="ready", virtual_size_bytes=8 * GIB),
                sample_volume("data", state="ready", virtual_size_bytes=GIB),
            ]
        ),
    )

    result = corral("show", "vm1")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = lines.index("Disks")
    assert lines[start + 1].split() == ["DEVICE", "VOLUME", "SIZE", "POOL", "BOOT", "MODE", "STATE"]
    assert [line.split() for line in lines[start + 2 : start + 5]] == [
        ["vda", "vm1-root", "8G", "fast", "yes", "rw", "ready"],
        ["vdb", "data", "1G", "default", "no", "ro", "ready"],
        ["vdc", "gone", "-", "-", "no", "rw", "missing"],
    ]


def test_show_json_has_the_disks_and_needs_no_volume_request(
    corral: Any, api: CannedAPI, make_instance: MakeInst
) -> None:
    inst = make_instance("vm1")
    inst.spec.disks = [InstanceDisk(volume="data")]
    api.answer("GET", "/v1/instances/vm1", json_response(inst))
    result = corral("show", "vm1", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["spec"]["disks"] == [
        {"volume": "data", "boot": False, "read_only": False}
    ]
    assert [r.url.path for r in api.requests] == ["/v1/instances/vm1"]


def test_show_without_disks_makes_one_request(
    corral: Any, api: CannedAPI, make_instance: MakeInst
) -> None:
    api.answer("GET", "/v1/instances/vm1", json_response(make_instance("vm1")))
    result = corral("show", "vm1")
    assert result.exit_code == 0, result.output
    assert "Disks" not in result.stdout
    assert len(api.requests) == 1
