"""Corral: VMs and system containers on your own servers.

The package is split into rooms (see docs/architecture.md): model, store, bus, api, client, cli,
controller, agent, images. import-linter keeps the layers honest in `make test`.
"""

__version__ = "0.1.0"
