"""The Registry v2 client: the only code that speaks HTTP to the upstream registry."""

from service.registry.client import MANIFEST_TYPES, Manifest, RegistryClient

__all__ = ["MANIFEST_TYPES", "Manifest", "RegistryClient"]
