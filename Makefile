# Corral: `make demo` runs the main job, `make test` runs the whole suite.
# Both install what they need on a fresh Debian 12 machine (apt packages, the .venv).

VENV        := .venv
PY          := $(VENV)/bin/python
APT_PACKAGES := qemu-system-x86 qemu-utils busybox-static cpio xz-utils zstd kmod \
                iproute2 procps ca-certificates btrfs-progs dosfstools mtools binutils \
                mmdebstrap e2fsprogs
PYTEST_ARGS ?=

.PHONY: setup apt venv test lint unit demo bench clean

setup: apt venv

# Installs the host packages Corral drives (QEMU, qemu-img, busybox for guests) when one is
# missing, and makes sure apt's package lists exist: the image builder downloads from them.
apt:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || ! ls /var/lib/apt/lists/ | grep -q '_Packages'; then \
		echo "==> installing host packages: $(APT_PACKAGES)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES); \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

lint: venv
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: setup lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Fast feedback while coding: everything but the tests that boot real guests.
unit: venv
	$(VENV)/bin/pytest -m 'not slow' -q $(PYTEST_ARGS)

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) bench/boot.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
