"""The owner's node delivers Full-access vault keys by itself (issue 5, participant node).

A Full-access purchase holds the price in escrow until the asset's owner posts
the vault key wrapped for the licensee. :class:`KeyDelivery` is the node's
thread that does this: each pass it reads the licenses sold since the last
full one, and for a Full-access license of an asset this account owns (or
operates) whose escrow awaits the key it

* finds the asset's vault entry in this home (the asset's ``vaultUri`` /
  ``contentHash`` is the vault id; its ``keyCommitment`` must match the entry),
* wraps the entry's data key for the X25519 key the licensee registered in
  the IdentityRegistry -- never a key handed over off-chain -- which must be
  the key the contract recorded at purchase (``recipientKey``), and
* posts it with ``deliverKey``.

Once the dispute window has passed it calls ``release`` (the contract lets
anyone do that, so the owner's node does it for its Share holders); a disputed
escrow is the admin's to resolve and is left alone. Every decision reads the
escrow state from the chain, so a restarted node never delivers twice.
Problems with one license (no vault entry, no key, a timed-out delivery) are
logged once per license and the loop goes on.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from collab.errors import CollabError
from orchestrator.workers import BackgroundWorker

log = logging.getLogger("collab.node.keys")

ZERO_KEY = b"\x00" * 32


class KeyDelivery(BackgroundWorker):
    """Polls Licensing and delivers/releases Full-access escrows of this account's assets."""

    thread_name = "key-delivery"

    def __init__(self, chain: Any, lock: threading.Lock, *, interval: float = 1.0, release: bool = True) -> None:
        from chain.clients.asset_registry import AssetRegistryClient
        from chain.clients.identity_registry import IdentityRegistryClient
        from chain.clients.licensing import LicensingClient
        from collab.vault import Vault

        super().__init__()
        self.chain, self.lock, self.interval, self.release = chain, lock, interval, release
        self.licensing = LicensingClient.from_deployment(chain.deployment, chain.w3, chain.account)
        self.assets = AssetRegistryClient.from_deployment(chain.deployment, chain.w3, None)
        self.identities = IdentityRegistryClient.from_deployment(chain.deployment, chain.w3, None)
        self.vault = Vault(Path(chain.settings.vault_dir))
        self.me = str(chain.account.address).lower()
        self.done: set[int] = set()  # licenses that need nothing more from this node (final, or not ours)
        self.deadlines: dict[int, int] = {}  # license -> end of its dispute window (release after it)
        self.events: list[str] = []
        self._logged: dict[int, str] = {}

    def start(self) -> KeyDelivery:
        self._start_thread()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a transient RPC error must not end the worker
                log.exception("key delivery pass failed")
            self._stop.wait(self.interval)

    def poll(self) -> list[str]:
        """One pass over the unsettled licenses; what this pass did (one line per transaction)."""
        new: list[str] = []
        for license_id in range(1, self.licensing.license_count() + 1):
            if license_id in self.done:
                continue
            try:
                line = self._one(license_id)
            except CollabError as exc:
                self._log_once(license_id, str(exc))
                continue
            if line:
                log.info("%s", line)
                new.append(line)
        self.events = (self.events + new)[-200:]
        return new

    def _one(self, license_id: int) -> str | None:
        from chain.clients.licensing import EscrowState, LicenseKind

        lic = self.licensing.license(license_id)
        if lic.kind != LicenseKind.FULL_ACCESS or lic.escrow_state in (EscrowState.RELEASED, EscrowState.REFUNDED):
            self.done.add(license_id)
            return None
        if not self._mine(lic.asset_id):
            return None  # ownership may still move to us; re-read next pass
        if lic.escrow_state == EscrowState.AWAITING_KEY:
            return self._deliver(lic)
        if lic.escrow_state == EscrowState.KEY_DELIVERED and self.release:
            return self._release(lic)
        return None  # disputed: the admin resolves it

    def _mine(self, asset_id: int) -> bool:
        owner = str(self.assets.owner_of(asset_id)).lower()
        return owner == self.me or self.licensing.is_operator(asset_id, self.me)

    def _deliver(self, lic: Any) -> str:
        from collab.errors import NotFound, ProtocolViolation

        asset = self.assets.asset(lic.asset_id)
        entry_id = asset.vault_uri.removeprefix("vault://") if asset.vault_uri.startswith("vault://") else asset.content_hash.hex()
        if not self.vault.exists(entry_id):
            raise NotFound(f"asset {lic.asset_id} has no entry {entry_id[:16]}… in this home's vault: cannot deliver its key")
        if self.vault.entry(entry_id).key_commitment != asset.key_commitment:
            raise ProtocolViolation(f"vault entry {entry_id[:16]}… does not match asset {lic.asset_id}'s key commitment")
        licensee = self.identities.identity_of(lic.licensee)
        key = licensee.keys.x25519_key if licensee is not None else ZERO_KEY
        if key == ZERO_KEY:
            raise NotFound(f"licensee {lic.licensee} has no X25519 key in the IdentityRegistry")
        if lic.recipient_key != key:
            raise ProtocolViolation(f"licensee {lic.licensee} changed its X25519 key since the purchase: the contract "
                                    "records another recipient key")
        wrapped = self.vault.add_recipient(entry_id, self.chain.identity.x25519_private_key, key)
        with self.lock:
            fresh = self.licensing.license(lic.license_id)  # another process may have delivered meanwhile
            if fresh.escrow_state != lic.escrow_state:
                return ""
            self.licensing.deliver_key(lic.license_id, wrapped)
        return f"license {lic.license_id}: vault key delivered to {lic.licensee} (asset {lic.asset_id})"

    def _release(self, lic: Any) -> str:
        from chain.errors import ContractRevert

        deadline = self.deadlines.get(lic.license_id)
        if deadline is not None and int(self.chain.w3.eth.get_block("latest")["timestamp"]) <= deadline:
            return ""
        try:
            with self.lock:
                settled = self.licensing.release(lic.license_id)
        except ContractRevert as exc:
            if exc.error_name != "DisputeWindowOpen":
                raise
            self.deadlines[lic.license_id] = int(exc.error_args.get("deadline", 0))
            return ""
        self.done.add(lic.license_id)
        return f"license {lic.license_id}: escrow of {settled.amount} wei released after the dispute window"

    def _log_once(self, license_id: int, message: str) -> None:
        if self._logged.get(license_id) != message:
            self._logged[license_id] = message
            log.warning("license %d: %s", license_id, message)
            self.events = (self.events + [f"license {license_id}: {message}"])[-200:]
