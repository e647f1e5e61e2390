"""build_image: known recipes, all-or-nothing output, a warm cache that downloads nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import corral.images
from corral.errors import ImageBuildError
from corral.images import BuiltImage, build_image, list_recipes, load_image


def test_public_api_is_what_the_driver_uses() -> None:
    assert sorted(corral.images.__all__) == [
        "BuiltImage",
        "ProgressFn",
        "build_image",
        "list_recipes",
        "load_image",
        "write_nocloud_seed",
    ]


def test_tiny_and_debian_12_are_known_recipes() -> None:
    assert {"tiny", "debian-12"} <= set(list_recipes())


def test_unknown_recipe_is_refused_before_touching_disk(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match=r"known recipes: .*tiny") as caught:
        build_image("huge", tmp_path / "out" / "huge", tmp_path / "cache")
    assert caught.value.code == "unknown_recipe"
    assert list(tmp_path.iterdir()) == []


def test_failed_build_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "images"
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))  # apt-cache cannot be found
    with pytest.raises(ImageBuildError, match="apt-cache is not installed"):
        build_image("tiny", images / "tiny", tmp_path / "cache")
    assert list(images.iterdir()) == []


def test_load_image_refuses_a_directory_without_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="build it again"):
        load_image(tmp_path)


def write_files(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).write_bytes(name.encode())


def test_disk_image_manifest_round_trips(tmp_path: Path) -> None:
    write_files(tmp_path, "vmlinux", "initrd.img", "disk.qcow2")
    image = BuiltImage(
        name="debian-12",
        kind="disk",
        kernel=tmp_path / "vmlinux",
        initrd=tmp_path / "initrd.img",
        cmdline="root=/dev/vda ro",
        size_bytes=30,
        digest="sha256:" + "0" * 64,
        recipe={"name": "debian-12"},
        build_seconds=42.0,
        disk=tmp_path / "disk.qcow2",
        disk_virtual_size_bytes=2 << 30,
        cloud_init=True,
    )
    manifest = image.to_manifest()
    assert manifest["disk"] == "disk.qcow2"  # relative: the directory can move
    (tmp_path / "image.json").write_text(json.dumps(manifest))
    assert load_image(tmp_path) == image

    (tmp_path / "disk.qcow2").unlink()
    with pytest.raises(ImageBuildError, match="missing"):
        load_image(tmp_path)


def test_manifests_from_before_disk_images_still_load(tmp_path: Path) -> None:
    write_files(tmp_path, "vmlinux", "initrd.cpio.zst")
    old = {
        "name": "tiny",
        "kind": "initramfs",
        "kernel": "vmlinux",
        "initrd": "initrd.cpio.zst",
        "cmdline": "quiet",
        "size_bytes": 1,
        "digest": "sha256:x",
        "recipe": {},
        "build_seconds": 1.0,
    }
    (tmp_path / "image.json").write_text(json.dumps(old))
    image = load_image(tmp_path)
    assert (image.disk, image.disk_virtual_size_bytes, image.cloud_init) == (None, 0, False)


@pytest.mark.slow
def test_tiny_image_files_and_recipe(tiny_image: BuiltImage) -> None:
    assert tiny_image.kind == "initramfs"
    assert tiny_image.kernel.read_bytes()[:4] == b"\x7fELF"
    assert (
        tiny_image.size_bytes == tiny_image.kernel.stat().st_size + tiny_image.initrd.stat().st_size
    )
    assert tiny_image.digest.startswith("sha256:") and len(tiny_image.digest) == 71
    assert "console=" not in tiny_image.cmdline
    recipe = tiny_image.recipe
    assert recipe["name"] == "tiny" and recipe["builder_version"] == 1
    assert {"busybox-static", "qemu-guest-agent", "libc6"} <= set(recipe["packages"])
    assert any(
        p.startswith("linux-image-") and p.endswith("-cloud-amd64") for p in recipe["packages"]
    )
    modules = recipe["modules"]
    assert modules.index("virtio_ring") < modules.index("virtio") < modules.index("virtio_pci")
    assert load_image(tiny_image.kernel.parent) == tiny_image


@pytest.mark.slow
def test_warm_rebuild_downloads_nothing_and_is_reproducible(
    tiny_image: BuiltImage,
    image_cache_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events: list[tuple[float, str]] = []
    dest = tmp_path / "tiny"
    dest.mkdir()
    (dest / "stale-file").write_text("from an older build")
    image = build_image("tiny", dest, image_cache_dir, lambda f, m: events.append((f, m)))

    messages = [m for _, m in events]
    assert any(m.startswith("download: all") and m.endswith("packages cached") for m in messages)
    assert not any(m.startswith("download ") for m in messages)  # no "download N/M"
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert messages[-1].startswith("done")
    assert image.digest == tiny_image.digest  # same packages, same bytes
    assert image.build_seconds < 90
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["image.json", image.kernel.name, image.initrd.name]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no build or old dirs left
    with capsys.disabled():
        print(
            f"\n[tiny] warm build {image.build_seconds:.1f} s, {image.size_bytes / 2**20:.1f} MiB"
        )
