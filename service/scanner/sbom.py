"""CycloneDX SBOM of an image's inventory, built with cyclonedx-python-lib."""

from __future__ import annotations

import json
import uuid
from typing import Any

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.bom_ref import BomRef
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from service.scanner.inventory import Inventory, Package

SCHEMA_VERSION = SchemaVersion.V1_6
_TOOL = "tagwarden"


def image_purl(image_ref: str, digest: str) -> str:
    """``pkg:oci/<name>@<digest>?repository_url=<repository>`` for an image reference."""
    repository = image_ref.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:  # a tag, not a registry port
        repository = repository[: len(repository) - len(last)] + last.split(":", 1)[0]
    name = repository.rsplit("/", 1)[-1]
    return PackageURL("oci", None, name, digest, {"repository_url": repository}).to_string()


def _component(pkg: Package) -> Component:
    props = [
        Property(name=f"{_TOOL}:ecosystem", value=pkg.ecosystem),
        Property(name=f"{_TOOL}:layer_digest", value=pkg.layer_digest),
        Property(name=f"{_TOOL}:path", value=pkg.path),
    ]
    if pkg.source_name and (pkg.source_name, pkg.source_version) != (pkg.name, pkg.version):
        props.append(Property(name=f"{_TOOL}:source_name", value=pkg.source_name))
        props.append(Property(name=f"{_TOOL}:source_version", value=pkg.source_version or ""))
    return Component(
        name=pkg.name,
        version=pkg.version,
        type=ComponentType.LIBRARY,
        purl=PackageURL.from_string(pkg.purl),
        bom_ref=BomRef(pkg.purl),
        properties=props,
    )


def cyclonedx_bom(inventory: Inventory, *, image_ref: str, digest: str) -> Bom:
    """The inventory as a cyclonedx-python-lib `Bom` (one component per distinct purl)."""
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"tagwarden:{image_ref}@{digest}"))
    purl = image_purl(image_ref, digest)
    image = Component(
        name=image_ref,
        version=digest,
        type=ComponentType.CONTAINER,
        purl=PackageURL.from_string(purl),
        bom_ref=BomRef(purl),
    )
    bom.metadata.component = image
    bom.metadata.tools.components.add(Component(name=_TOOL, type=ComponentType.APPLICATION))
    if inventory.os_release is not None:
        osr = inventory.os_release
        bom.metadata.properties.add(Property(name=f"{_TOOL}:os", value=osr.pretty_name or osr.id))
    components: dict[str, Component] = {}
    for pkg in inventory.packages:
        components.setdefault(pkg.purl, _component(pkg))
    for component in components.values():
        bom.components.add(component)
    bom.register_dependency(image, components.values())
    return bom


def cyclonedx_json(inventory: Inventory, *, image_ref: str, digest: str) -> dict[str, Any]:
    """CycloneDX 1.6 JSON document of an image's inventory."""
    bom = cyclonedx_bom(inventory, image_ref=image_ref, digest=digest)
    return json.loads(JsonV1Dot6(bom).output_as_string())


def validation_errors(document: dict[str, Any]) -> str | None:
    """Why a CycloneDX JSON document breaks the 1.6 schema (schemas ship offline), or None."""
    error = JsonStrictValidator(SCHEMA_VERSION).validate_str(json.dumps(document))
    return str(error) if error is not None else None
