"""The owner's running node delivers Full-access vault keys by itself, once, and releases the escrow.

Real anvil, a real orchestrator process and a real ``collab node start`` for
the owner's home (fixtures of :mod:`test_node_routing`). The owner registers
two vault-stored files as assets and offers Full-access on both; the buyer (a
second home, its X25519 key registered on-chain) buys both through the CLI.
The node wraps the first asset's key for the buyer, who unwraps it from the
chain against the key commitment and decrypts the stored blob to the
registered file. The second asset's vault entry is missing from the home: the
node logs that once and carries on. After a restart and the dispute window
the node releases the first escrow and never delivers again.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chain.clients.asset_registry import AssetRegistryClient
from chain.clients.licensing import EscrowState, LicensingClient
from collab.config import Settings
from collab.vault import Vault, decrypt_blob, unwrap_delivered_key
from test_claim_manager import GameEnv, env, game_env  # noqa: F401 - fixtures
from test_claims_cli import _home, cli
from test_node_routing import _stop, home, start_node  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow  # real orchestrator and node processes


def _ok(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> dict[str, Any]:
    code, out, err = cli(capsys, home, "--json", *args)
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def _wait_state(licensing: LicensingClient, license_id: int, state: EscrowState, log: Path, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while licensing.license(license_id).escrow_state != state:
        assert time.monotonic() < end, f"license {license_id} never reached {state.name}: {log.read_text()[-2000:]}"
        time.sleep(0.3)


def test_the_owners_node_delivers_the_full_access_key_once_and_releases(
    env: GameEnv, home: Path, start_node: Callable[..., subprocess.Popen[str]], tmp_path: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str], time_travel: Callable[[int], int],
) -> None:
    buyer_home = tmp_path / "buyer"
    buyer = _home(env, buyer_home, "key-buyer", True)
    files = [tmp_path / "model.bin", tmp_path / "lost.bin"]
    for i, f in enumerate(files):
        f.write_bytes(bytes(range(256)) * (40 + i))
    assets = [_ok(capsys, home, "asset", "register", "--kind", "model", "--file", str(f), "--vault")["id"] for f in files]
    lost = AssetRegistryClient.from_deployment(env.deployment, env.w3, None).asset(assets[1])
    (Settings.resolve(home=home, env={}).vault_dir / "meta" / f"{lost.content_hash.hex()}.json").unlink()
    licenses = []
    for asset_id in assets:
        offer = _ok(capsys, home, "license", "offer", str(asset_id), "--kind", "full-access", "--price", "1000")
        licenses.append(_ok(capsys, buyer_home, "license", "buy", str(offer["offer_id"]))["license_id"])
    licensing = LicensingClient.from_deployment(env.deployment, env.w3, None)
    assert all(licensing.license(i).escrow_state == EscrowState.AWAITING_KEY for i in licenses)

    node = start_node()
    log = home / "node.log"
    _wait_state(licensing, licenses[0], EscrowState.KEY_DELIVERED, log)
    wrapped = licensing.wrapped_key(licenses[0])
    asset = AssetRegistryClient.from_deployment(env.deployment, env.w3, None).asset(assets[0])
    data_key = unwrap_delivered_key(wrapped, buyer.x25519_private_key, asset.key_commitment)
    blob = Vault(Settings.resolve(home=home, env={}).vault_dir).export(asset.content_hash.hex())  # what the owner serves
    assert decrypt_blob(blob, data_key) == files[0].read_bytes()
    # The lost entry: the escrow still awaits the key, and the node said why (once), still running.
    assert licensing.license(licenses[1]).escrow_state == EscrowState.AWAITING_KEY
    assert node.poll() is None

    _stop(node)
    time_travel(2 * 86_400 + 60)  # past the dispute window (a day in the test deployment)
    node = start_node()
    _wait_state(licensing, licenses[0], EscrowState.RELEASED, log)
    _stop(node)  # its last pass (and log lines) end before it exits
    delivered = [e["args"]["licenseId"] for e in licensing.contract.events.KeyDelivered().get_logs(from_block=0)]
    assert delivered.count(licenses[0]) == 1 and licenses[1] not in delivered  # the restart delivered nothing again
    assert licensing.wrapped_key(licenses[0]) == wrapped
    text = log.read_text()
    assert text.count("vault key delivered") == 1 and text.count("escrow of 1000 wei released") == 1
    assert text.count(f"license {licenses[1]}: asset {assets[1]} has no entry") == 2, text[-2000:]  # once per node run


def test_the_worker_refuses_a_key_changed_since_the_purchase_and_other_owners_licenses(
    env: GameEnv, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    """In-process worker passes: a licensee who re-keys after buying gets nothing (logged once); a stranger's node delivers nothing."""
    import threading

    from chain.clients.identity_registry import IdentityRegistryClient, Keys
    from collab.identity import Identity
    from orchestrator.key_delivery import KeyDelivery
    from orchestrator.workers import NodeChain

    buyer_home, stranger_home = tmp_path / "buyer", tmp_path / "stranger"
    buyer, stranger = _home(env, buyer_home, "rekey-buyer", True), _home(env, stranger_home, "stranger", True)
    f = tmp_path / "model.bin"
    f.write_bytes(b"weights" * 500)
    asset_id = _ok(capsys, home, "asset", "register", "--kind", "model", "--file", str(f), "--vault")["id"]
    offer = _ok(capsys, home, "license", "offer", str(asset_id), "--kind", "full-access", "--price", "1000")
    license_id = _ok(capsys, buyer_home, "license", "buy", str(offer["offer_id"]))["license_id"]

    def worker(ident: Identity, h: Path) -> KeyDelivery:
        return KeyDelivery(NodeChain(env.w3, env.deployment, ident.account, Settings.resolve(home=h, env={}), ident), threading.Lock())

    assert worker(stranger, stranger_home).poll() == []  # not its asset
    registry = IdentityRegistryClient.from_deployment(env.deployment, env.w3, buyer.account)
    old = registry.identity_of(buyer.address).keys  # type: ignore[union-attr]
    registry.update_keys(Keys(old.curve_key, bytes(31) + b"\x09", old.bls_pubkey, old.bls_pop))
    owner = worker(Identity.load(home, "pw"), home)
    assert owner.poll() == [] and owner.poll() == []
    licensing = LicensingClient.from_deployment(env.deployment, env.w3, None)
    assert licensing.license(license_id).escrow_state == EscrowState.AWAITING_KEY and licensing.wrapped_key(license_id) == b""
    assert [e for e in owner.events if "changed its X25519 key" in e] == [
        f"license {license_id}: licensee {buyer.address} changed its X25519 key since the purchase: the contract "
        "records another recipient key"]
