"""Reconcilers and the services the API calls: desired state in, guests that match it out."""

from corral.controller.manager import Controller
from corral.controller.settings import ControllerSettings

__all__ = ["Controller", "ControllerSettings"]
