"""SBOMs from stored scan inventories (every platform of an index in one document)."""

from __future__ import annotations

import json
from typing import Any

from service.scanner.inventory import Inventory, OsRelease, Package
from service.scanner.sbom import cyclonedx_json


def inventory_from_dict(data: dict[str, Any]) -> Inventory:
    """Rebuild an Inventory from its `to_dict()` form."""
    os_release = data.get("os_release")
    return Inventory(
        packages=[Package(**p) for p in data.get("packages", [])],
        os_release=OsRelease(**os_release) if os_release else None,
        skipped=int(data.get("skipped", 0)),
    )


def sbom_of(scan: dict[str, Any], inventories: dict[str, dict[str, Any]]) -> str:
    """CycloneDX JSON text for a scan; platforms merged, one component per purl."""
    merged = Inventory()
    seen: set[str] = set()
    for data in inventories.values():
        inventory = inventory_from_dict(data)
        merged.os_release = merged.os_release or inventory.os_release
        for package in inventory.packages:
            if package.purl not in seen:
                seen.add(package.purl)
                merged.packages.append(package)
    document = cyclonedx_json(merged, image_ref=scan["repository"], digest=scan["digest"])
    return json.dumps(document)
