"""Disks as QEMU sees them: node names, option rendering, and reading QEMU's own answers
(query-block, query-named-block-nodes, query-pci; samples trimmed from QEMU 7.2)."""

from __future__ import annotations

import pytest

from corral.agent.compute.qemu.blockdev import (
    AttachedDisk,
    attached_disks,
    free_port,
    named_nodes,
    node_names,
    render_option,
)


@pytest.mark.parametrize(
    ("disk_id", "expected"),
    [
        ("data", ("data", "data-file")),
        ("a" * 25, ("a" * 25, "a" * 25 + "-file")),
    ],
)
def test_short_ids_name_their_nodes_as_they_are(disk_id: str, expected: tuple[str, str]) -> None:
    assert node_names(disk_id) == expected


@pytest.mark.parametrize("length", [26, 40, 63])
def test_long_ids_get_short_distinct_node_names(length: int) -> None:
    disk_id = "v" * length
    sibling = "v" * (length - 1) + "w"
    format_node, file_node = node_names(disk_id)
    assert len(format_node) == 26 and len(file_node) == 31  # QEMU allows 31
    assert format_node.startswith("v" * 17 + "-")
    assert node_names(sibling)[0] != format_node


def test_render_option_doubles_commas_and_spells_booleans() -> None:
    options = {"driver": "file", "filename": "/p/a,b", "read-only": True, "x": False}
    assert render_option(options) == "driver=file,filename=/p/a,,b,read-only=on,x=off"
    assert render_option({"id": "d1"}, "virtio-blk-pci") == "virtio-blk-pci,id=d1"


def _block(qdev: str, node: str, path: str, ro: bool, size: int) -> dict[str, object]:
    return {
        "device": "",
        "qdev": qdev,
        "locked": False,
        "removable": False,
        "inserted": {
            "node-name": node,
            "file": path,
            "ro": ro,
            "drv": "qcow2",
            "image": {"virtual-size": size, "filename": path, "format": "qcow2"},
        },
        "type": "unknown",
    }


def test_attached_disks_are_read_from_query_block_without_the_seed() -> None:
    reply = [
        _block("/machine/peripheral/root/virtio-backend", "root", "/p/root.qcow2", False, 64),
        _block("/machine/peripheral/corral_seed/virtio-backend", "corral_seed", "/r/s", True, 1),
        _block("/machine/peripheral/data", "data", "/p/data.qcow2", True, 32),  # virtio-mmio
        {"device": "", "qdev": "/machine/unattached/device[5]", "locked": False},  # no medium
    ]
    assert attached_disks(reply) == [
        AttachedDisk("root", "root", "/p/root.qcow2", False, 64),
        AttachedDisk("data", "data", "/p/data.qcow2", True, 32),
    ]
    assert attached_disks([]) == []
    assert attached_disks({"unexpected": "shape"}) == []


def test_named_nodes_are_read_from_query_named_block_nodes() -> None:
    reply = [{"node-name": "d2"}, {"node-name": "d2-file"}, {"drv": "file"}]
    assert named_nodes(reply) == {"d2", "d2-file"}


def _port(qdev_id: str, devices: list[dict[str, object]]) -> dict[str, object]:
    return {
        "bus": 0,
        "qdev_id": qdev_id,
        "class_info": {"class": 1540, "desc": "PCI bridge"},
        "pci_bridge": {"bus": {"number": 0, "secondary": 1, "subordinate": 1}, "devices": devices},
    }


def test_free_port_is_the_first_empty_corral_root_port() -> None:
    disk = {"bus": 1, "qdev_id": "d1", "class_info": {"class": 256}}
    reply = [
        {
            "bus": 0,
            "devices": [
                {"bus": 0, "qdev_id": "", "class_info": {"class": 1536}},
                {"bus": 0, "qdev_id": "vser0", "class_info": {"class": 1920}},
                _port("corral_port0", [disk]),
                _port("other_bridge", []),
                _port("corral_port10", []),
                _port("corral_port2", []),
            ],
        }
    ]
    assert free_port(reply) == "corral_port2"
    assert free_port([{"bus": 0, "devices": [_port("corral_port0", [disk])]}]) is None
