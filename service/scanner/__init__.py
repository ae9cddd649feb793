"""The built-in scanner engine: layers -> inventory -> OSV match -> findings and SBOM.

Pure library code (no RQ, no Flask): `layers.iter_layer_files` streams a layer,
`inventory.build_inventory` applies whiteouts and reads package databases,
`matching.match_inventory` checks them against `service.store.vulndb.VulnDB`, and
`sbom.cyclonedx_json` renders the inventory as CycloneDX.
"""

from service.scanner.errors import FileTooLarge, ScanError

__all__ = ["FileTooLarge", "ScanError"]
