"""A Python client generated from openapi.yaml (openapi-python-client, offline): every module of
it imports, and it walks the path an admin takes: create a policy, promote, read the history,
request and read a scan."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from testkit import oci, procs
from testkit import scan_fixtures as fixtures
from tests.integration.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "tagwarden_client"
# No post hooks: the defaults run ruff through the network-less sandbox for formatting only.
CONFIG = f"project_name_override: tagwarden-client\npackage_name_override: {PACKAGE}\n" \
         "post_hooks: []\n"
REPO = "client/app"
POLICY = {
    "name": "client-demo",
    "repositories": ["client/*"],
    "environments": ["develop", "staging", "production"],
    "push": {"allow": ["semver", "git-sha"], "immutable": ["semver"]},
    "promotion": {"develop": {}, "staging": {"from": "develop", "tags": ["semver"]},
                  "production": {"from": "staging", "tags": ["semver"]}},
    "scan_on_push": False,
}


@pytest.fixture(scope="module")
def client_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """Generate the client into a temporary directory and import it from there."""
    work = tmp_path_factory.mktemp("client")
    (work / "config.yaml").write_text(CONFIG)
    generator = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    assert generator, "openapi-python-client is not installed (pip install -e '.[test]')"
    result = subprocess.run(
        [generator, "generate", "--path", str(ROOT / "openapi.yaml"), "--meta", "none",
         "--config", str(work / "config.yaml"), "--output-path", str(work / PACKAGE),
         "--fail-on-warning"],
        cwd=work, capture_output=True, text=True, timeout=120,
        env={"PATH": str(Path(sys.executable).parent), "HOME": str(work), "NO_COLOR": "1",
             "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(work))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def vulndb(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The scanner's OSV fixture, imported the way an operator does (`tagwarden vulndb`)."""
    directory = fixtures.write_osv_dir(tmp_path_factory.mktemp("osv"),
                                       fixtures.osv_fixture_records())
    tagwarden = str(Path(sys.executable).parent / "tagwarden")
    done = subprocess.run([tagwarden, "vulndb", "import", str(directory), "--json"],
                          env=stack.cli_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_every_generated_module_imports(client_package: ModuleType):
    """Each module of the generated package imports (an operation whose module fails to
    import is missing from the client, whatever the other tests call)."""
    names = [info.name for info in pkgutil.walk_packages(client_package.__path__,
                                                         f"{PACKAGE}.")]
    failed = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, not the first
            failed[name] = f"{type(exc).__name__}: {exc}"
    assert failed == {}
    # the walk saw the whole package: one module per operation of openapi.yaml, and the
    # webhook's (whose required body once made the module fail on `Unset`)
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    operations = {op["operationId"] for item in spec["paths"].values()
                  for op in item.values() if isinstance(op, dict) and "operationId" in op}
    generated = {name.rpartition(".")[2] for name in names if name.count(".") == 3
                 and name.startswith(f"{PACKAGE}.api.")}
    assert generated == operations
    webhook = importlib.import_module(f"{PACKAGE}.api.events.registry_webhook")
    body = inspect.signature(webhook.sync_detailed).parameters["body"]
    assert body.default is inspect.Parameter.empty, body


def push(stack: Stack, tmp_path: Path, name: str, ref: str) -> oci.Image:
    image = oci.simple_image(name)
    layout = oci.write_layout(tmp_path / name, {"img": image})
    result = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/{ref}")
    assert result.returncode == 0, result.stderr
    return image


def test_an_admin_with_the_generated_client(client_package: ModuleType, stack: Stack,
                                            vulndb: None, tmp_path: Path):
    from tagwarden_client import AuthenticatedClient
    from tagwarden_client.api.policies import get_policy, put_policy
    from tagwarden_client.api.promotions import (
        create_promotion,
        get_environments,
        get_promotion,
        list_promotions,
    )
    from tagwarden_client.api.scans import create_scan, get_scan, get_vulndb, list_scans
    from tagwarden_client.models import Error, Policy, PromotionRequest, ScanRequest

    with AuthenticatedClient(base_url=stack.gw_url, token=procs.ADMIN_TOKEN,
                             timeout=30) as client:
        stored = put_policy.sync_detailed(name="client-demo", client=client,
                                          body=Policy.from_dict(POLICY))
        assert stored.status_code == 200, stored.content
        policy = get_policy.sync(name="client-demo", client=client)
        assert isinstance(policy, Policy) and policy.repositories == ["client/*"]

        image = push(stack, tmp_path, "client-1", f"{REPO}:v1.0.0")
        body = PromotionRequest(repository=REPO, environment="develop", tag="v1.0.0",
                                reason="shipped with the generated client")
        promoted = create_promotion.sync_detailed(client=client, body=body,
                                                  idempotency_key="client-demo-1")
        assert promoted.status_code == 201, promoted.content
        record = promoted.parsed
        assert record.digest == image.digest and record.environment == "develop"
        assert record.kind.value == "promotion" and record.tags == ["v1.0.0"]

        denied = create_promotion.sync(client=client, body=PromotionRequest(
            repository=REPO, environment="production", tag="v1.0.0"))
        assert isinstance(denied, Error) and denied.code == "policy_denied"
        assert [v.rule for v in denied.violations] == ["promotion.from"]

        history = list_promotions.sync(client=client, repository=REPO, limit=10)
        assert [item.id for item in history.items] == [record.id]
        assert get_promotion.sync(promotion_id=record.id, client=client).digest == image.digest
        state = get_environments.sync(client=client, repository=REPO)
        develop = next(env for env in state.environments if env.name == "develop")
        assert develop.digest == image.digest and develop.promotion_id == record.id

        assert get_vulndb.sync(client=client).records > 0
        scan = create_scan.sync(client=client, body=ScanRequest(repository=REPO,
                                                                reference="v1.0.0"))
        assert scan.digest == image.digest, scan
        listed = list_scans.sync(client=client, repository=REPO)
        assert scan.id in [item.id for item in listed.items]
        deadline = time.monotonic() + 60
        read = get_scan.sync(scan_id=scan.id, client=client)
        while read.status.value in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
            read = get_scan.sync(scan_id=scan.id, client=client)
        assert read.id == scan.id and read.status.value == "succeeded", read.error
        assert read.digest == image.digest and read.findings == []
        assert read.summary.critical == 0 and read.summary.high == 0
