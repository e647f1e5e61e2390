"""mmdebstrap's verbose output becomes few, ordered, monotonic progress reports."""

from __future__ import annotations

from corral.images.rootfs import MmdebstrapProgress

# Shortened from real `mmdebstrap --verbose` runs (package lists cut down to three).
HEAD = """\
I: chroot architecture amd64 is equal to the host's architecture
I: automatically chosen format: directory
I: skipping check/empty as requested
I: running apt-get update...
Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]
Get:2 http://deb.debian.org/debian bookworm/main amd64 Packages [8790 kB]
Reading package lists...
I: downloading packages with apt...
The following NEW packages will be installed:
  base-files libc6 mawk
0 upgraded, 3 newly installed, 0 to remove and 0 not upgraded.
"""
COLD_DOWNLOAD = """\
Need to get 2110 kB/2110 kB of archives.
Get:1 http://deb.debian.org/debian bookworm/main amd64 base-files amd64 12.4+deb12u15 [70.9 kB]
Get:2 http://deb.debian.org/debian bookworm/main amd64 libc6 amd64 2.36-9+deb12u14 [1900 kB]
Get:3 http://deb.debian.org/debian bookworm/main amd64 mawk amd64 1.3.4.20200120-3.1 [119 kB]
Fetched 2110 kB in 0s (21.0 MB/s)
"""
WARM_DOWNLOAD = "Need to get 0 B/2110 kB of archives.\n"
ESSENTIAL = """\
I: extracting archives...
I: installing essential packages...
Selecting previously unselected package base-files.
Setting up base-files (12.4+deb12u15) ...
Setting up libc6:amd64 (2.36-9+deb12u14) ...
Setting up mawk (1.3.4.20200120-3.1) ...
I: skipping essential/unlink as requested
I: running --essential-hook in shell: sh -c 'sh /b/hooks/debian-12-essential "$1"' exec /b/root
I: installing remaining packages inside the chroot...
0 upgraded, 2 newly installed, 0 to remove and 0 not upgraded.
"""
COLD_INSTALL = """\
Need to get 9 MB/9 MB of archives.
Get:1 http://deb.debian.org/debian bookworm/main amd64 udev amd64 252.39-1~deb12u2 [1 MB]
Get:2 http://deb.debian.org/debian-security bookworm-security/main amd64 \
linux-image-6.1.0-56-cloud-amd64 amd64 6.1.192-2 [8 MB]
"""
WARM_INSTALL = "Need to get 0 B/9 MB of archives.\n"
TAIL = """\
Setting up udev (252.39-1~deb12u2) ...
Setting up linux-image-6.1.0-56-cloud-amd64 (6.1.192-2) ...
update-initramfs: Generating /boot/initrd.img-6.1.0-56-cloud-amd64
I: running --customize-hook in shell: sh -c 'sh /b/hooks/debian-12-customize "$1"' exec /b/root
I: skipping cleanup/apt as requested
I: success in 47.2430 seconds
"""


def reports(text: str, start: float = 0.0, end: float = 1.0) -> list[tuple[float, str]]:
    progress = MmdebstrapProgress(start=start, end=end)
    found = []
    for line in text.splitlines(keepends=True):
        update = progress.feed(line)
        if update is not None:
            found.append(update)
    return found


def test_cold_run_reports_each_phase_in_order_with_downloads() -> None:
    found = reports(HEAD + COLD_DOWNLOAD + ESSENTIAL + COLD_INSTALL + TAIL)
    messages = [message for _, message in found]
    phases = list(dict.fromkeys(message.split(":")[0] for message in messages))
    assert phases == [
        "setup",
        "update",
        "download",
        "extract",
        "essential",
        "install",
        "customize",
        "cleanup",
        "mmdebstrap done",
    ]
    assert "download: fetched 2/3: libc6" in messages
    assert "install: set up 2/2: linux-image-6.1.0-56-cloud-amd64" in messages
    assert "install: initramfs initrd.img-6.1.0-56-cloud-amd64" in messages
    assert not any("InRelease" in message for message in messages)  # index fetches are not debs


def test_warm_run_says_everything_was_cached() -> None:
    messages = [m for _, m in reports(HEAD + WARM_DOWNLOAD + ESSENTIAL + WARM_INSTALL + TAIL)]
    assert "download: all packages cached" in messages
    assert "install: all packages cached" in messages
    assert not any("fetched" in message for message in messages)
    assert "essential: set up 3/3: mawk" in messages


def test_fractions_stay_in_range_and_never_go_back() -> None:
    found = reports(HEAD + COLD_DOWNLOAD + ESSENTIAL + COLD_INSTALL + TAIL, start=0.1, end=0.8)
    fractions = [fraction for fraction, _ in found]
    assert fractions == sorted(fractions)
    assert fractions[0] >= 0.1 and fractions[-1] == 0.8


def test_a_long_run_is_reported_in_steps_not_line_by_line() -> None:
    setting_up = "".join(f"Setting up pkg{i} (1.0) ...\n" for i in range(2000))
    text = "I: installing remaining packages inside the chroot...\n"
    text += "0 upgraded, 2000 newly installed, 0 to remove and 0 not upgraded.\n" + setting_up
    found = reports(text)
    assert 20 < len(found) < 120


def test_unknown_lines_and_phases_are_harmless() -> None:
    assert reports("W: something odd\nrandom text\n\n") == [(0.0, "setup")]
