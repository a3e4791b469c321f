"""``collab bench chain``: gas of every user operation of collab's asset layer, on a real chain.

A fresh anvil on a free port, the contracts deployed by ``chain.deploy``, and
every figure read from the ``gasUsed`` of a mined receipt of a transaction
sent through the typed clients in ``chain/clients/``: no estimates, no mocks.

Most operations are measured in *steady state*: one operation of the same
kind ran before, so one-off costs (a global counter's first write) are not
charged to the figure. The exceptions say so in their label ("first ...").

Two comparisons make the figures meaningful:

- OpenZeppelin's stock ERC-1155 ``safeTransferFrom`` (``benchmarks/contracts``),
  measured in the same run, is the baseline of a Shares transfer; the gap is
  the revenue-debt hook of ``RevenueDistributor``.
- A holder's claim must cost the same however many payments arrived and
  however many holders the asset has (the accumulator makes claims O(1));
  the suite reports the max/min ratio of those claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from rich.console import Group, RenderableType
from web3 import Web3

from benchmarks import report
from chain.anvil import AnvilProcess, anvil_binary, dev_account
from chain.client import ContractClient, TxResult, connect, deploy_contract
from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
from chain.clients.identity_registry import IdentityRegistryClient, Role
from chain.clients.licensing import LicenseKind, LicensingClient, Terms
from chain.clients.revenue_distributor import RevenueDistributorClient
from chain.clients.shares import SharesClient
from chain.compiler import SETTINGS, compile_contracts, solc_version
from chain.deploy import DEFAULT_PARAMS, deploy_all
from chain.deployment import Deployment
from chain.paths import NODE_MODULES
from collab import bls
from collab.errors import InternalError
from collab.metering import CallReceipt, request_hash, sign_call_receipt
from collab.vault import wrap_key

SUITE = "chain"
BASELINE_SOURCES: Path = Path(__file__).resolve().parent / "contracts"
PAYMENT_COUNTS: tuple[int, ...] = (1, 10, 100)
HOLDER_COUNTS: tuple[int, ...] = (1, 10, 50)
FLAT_TOLERANCE = 0.10  # a claim may vary by at most 10% across the scaling series

GWEI = 10**9
FEE_PER_CALL = 10**6 * GWEI  # 0.001 ETH
PRICE = 5 * 10**16  # 0.05 ETH
PAYMENT = 10**15
ROYALTY_BPS = 500  # each parent's rate for derived assets; 16 parents take 80%
MAX_PARENTS = 16
TRANSFER_AMOUNT = 1_000

Log = Callable[[str], None]


def run(results_dir: Path | str | None = None, log: Log | None = None) -> dict[str, Any]:
    """Run the suite on a fresh anvil; write ``chain.json`` and ``chain.png``; return the results."""
    say = log or (lambda _message: None)
    out_dir = report.results_dir(results_dir)
    started = time.monotonic()
    say("compiling the contracts and the ERC-1155 baseline")
    baseline_artifacts = compile_contracts(source_root=BASELINE_SOURCES)
    node = AnvilProcess()
    say(f"starting anvil on 127.0.0.1:{node.port}")
    with node:
        w3 = connect(node.rpc_url)
        say("deploying collab's contracts")
        deployment = deploy_all(w3, dev_account(0), rpc_url=node.rpc_url)
        bench = _ChainBench(w3, deployment, say)
        bench.measure_operations()
        baseline = bench.measure_baseline(baseline_artifacts)
        scaling = bench.measure_claim_scaling()
    results: dict[str, Any] = {
        "suite": SUITE,
        "created_at": report.utc_now(),
        "seconds": round(time.monotonic() - started, 2),
        "machine": report.machine_facts(),
        "versions": _versions(),
        "method": (
            "gasUsed of mined transaction receipts on a fresh anvil (automine), contracts deployed by "
            "chain.deploy.deploy_all with default parameters, every transaction sent through chain/clients; "
            "steady state unless the label says 'first'"
        ),
        "operations": bench.operations,
        "baseline": baseline,
        "claim_scaling": scaling,
    }
    return report.publish(out_dir, SUITE, results, lambda png: plot(results, png), say)


# --------------------------------------------------------------------- measurements


class _ChainBench:
    """The actors, the clients and the figures of one run."""

    def __init__(self, w3: Web3, deployment: Deployment, log: Log) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.log = log
        self.operations: dict[str, dict[str, Any]] = {}
        self.owner = dev_account(1)
        self.buyer = dev_account(2)
        self.partner = dev_account(3)
        self.payer = dev_account(4)
        self.compute_node = dev_account(5)
        self.spare = dev_account(6)
        self._x25519: dict[str, Any] = {}

    # ------------------------------------------------------------- clients

    def _client(self, cls: type[Any], account: LocalAccount) -> Any:
        return cls.from_deployment(self.deployment, self.w3, account)

    def identities(self, account: LocalAccount) -> IdentityRegistryClient:
        return self._client(IdentityRegistryClient, account)  # type: ignore[no-any-return]

    def assets(self, account: LocalAccount | None = None) -> AssetRegistryClient:
        return self._client(AssetRegistryClient, account or self.owner)  # type: ignore[no-any-return]

    def licensing(self, account: LocalAccount) -> LicensingClient:
        return self._client(LicensingClient, account)  # type: ignore[no-any-return]

    def distributor(self, account: LocalAccount) -> RevenueDistributorClient:
        return self._client(RevenueDistributorClient, account)  # type: ignore[no-any-return]

    def shares(self, account: LocalAccount | None = None) -> SharesClient:
        return self._client(SharesClient, account or self.owner)  # type: ignore[no-any-return]

    def record(self, key: str, label: str, tx: TxResult | None) -> int:
        """Keep one measured operation (its receipt's gasUsed)."""
        if tx is None:
            raise InternalError(f"benchmark step {key} produced no transaction result")
        self.operations[key] = {"label": label, "gas": tx.gas_used, "tx_hash": tx.tx_hash}
        return tx.gas_used

    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        self.log(message)
        yield

    # ------------------------------------------------------------- user operations

    def measure_operations(self) -> None:
        """Identities, assets, the four license kinds, metering, payments, claims, Share transfers."""
        with self.step("registering Sahara IDs (BLS proof of possession checked on-chain)"):
            self.register_identity(self.partner, "partner")
            self.register_identity(self.buyer, "buyer")
            tx = self.register_identity(self.owner, "owner")
            self.record("register_id", "register Sahara ID", tx)

        with self.step(f"registering assets (no parents, 2 and {MAX_PARENTS} parents)"):
            parents = [self.register_asset(f"parent {i}", royalty_bps=ROYALTY_BPS).asset_id for i in range(MAX_PARENTS)]
            base = self.register_asset("base model")
            self.record("register_asset", "register asset (no parents)", base.tx)
            child2 = self.register_asset("child of 2", parents=parents[:2])
            self.record("register_asset_2_parents", "register asset (2 parents)", child2.tx)
            child16 = self.register_asset(f"child of {MAX_PARENTS}", parents=parents)
            self.record(f"register_asset_{MAX_PARENTS}_parents", f"register asset ({MAX_PARENTS} parents)", child16.tx)
            quiet = self.register_asset("no revenue yet")
        self.base, self.child2, self.child16, self.quiet = base.asset_id, child2.asset_id, child16.asset_id, quiet.asset_id

        self.measure_api_licenses()
        self.measure_full_access()
        self.measure_long_term_and_partnership()
        self.measure_revenue()

    def measure_api_licenses(self) -> None:
        owner, buyer = self.licensing(self.owner), self.licensing(self.buyer)
        with self.step("API licenses: offer, buy, post call receipts (1 and 100 calls)"):
            terms = Terms(fee_per_call=FEE_PER_CALL)
            warm_offer = owner.offer(self.base, LicenseKind.API, terms).offer_id
            warm = buyer.buy(warm_offer, value=FEE_PER_CALL * 10).license_id
            self.post_receipt(warm, 1)  # the compute party's credit slot is written once here
            offer = owner.offer(self.base, LicenseKind.API, terms)
            self.record("offer_api", "offer license: API", offer.tx)
            one = buyer.buy(offer.offer_id, value=FEE_PER_CALL * 300)
            self.record("buy_api", "buy license: API (prepaid credit)", one.tx)
            hundred = buyer.buy(offer.offer_id, value=FEE_PER_CALL * 300).license_id
            self.record("post_receipt_1_call", "post call receipt (1 call)", self.post_receipt(one.license_id, 1).tx)
            self.record("post_receipt_100_calls", "post call receipt (100 calls)", self.post_receipt(hundred, 100).tx)
            self.record("post_receipt_next_100_calls", "post call receipt (next 100 calls, same license)",
                        self.post_receipt(hundred, 200).tx)

    def measure_full_access(self) -> None:
        owner, buyer = self.licensing(self.owner), self.licensing(self.buyer)
        with self.step("Full-access license: offer, buy into escrow, deliver the wrapped key, release"):
            offer = owner.offer(self.base, LicenseKind.FULL_ACCESS, Terms(price=PRICE))
            self.record("offer_full_access", "offer license: Full-access", offer.tx)
            bought = buyer.buy(offer.offer_id, value=PRICE)
            self.record("buy_full_access", "buy license: Full-access (escrow)", bought.tx)
            # collab.vault's wrap (X25519 + AES-GCM, 81 bytes), as a real delivery posts it.
            wrapped = wrap_key(keccak(b"bench vault key"), self._x25519["buyer"].public_key().public_bytes_raw())
            delivered = owner.deliver_key(bought.license_id, wrapped)
            self.record("deliver_key", "Full-access: deliver wrapped key", delivered.tx)
            # The bench's own chain: skip the dispute window instead of waiting for it.
            self._increase_time(DEFAULT_PARAMS["KEY_DISPUTE_WINDOW"] + 1)
            released = owner.release(bought.license_id)
            self.record("release_escrow", "Full-access: release escrow", released.tx)

    def measure_long_term_and_partnership(self) -> None:
        owner = self.licensing(self.owner)
        with self.step("Long-term and Partnership licenses (incl. an installment)"):
            offer = owner.offer(self.base, LicenseKind.LONG_TERM, Terms(price=PRICE, duration=30 * 86_400))
            self.record("offer_long_term", "offer license: Long-term", offer.tx)
            bought = self.licensing(self.buyer).buy(offer.offer_id, value=PRICE)
            self.record("buy_long_term", "buy license: Long-term", bought.tx)
            terms = Terms(price=PRICE, terms_hash=keccak(b"bench partnership terms"), revenue_split_bps=2_000,
                          installment_interval=30 * 86_400, installment_count=3, partner=self.partner.address)
            offer = owner.offer(self.base, LicenseKind.PARTNERSHIP, terms)
            self.record("offer_partnership", "offer license: Partnership", offer.tx)
            partner = self.licensing(self.partner)
            bought = partner.buy(offer.offer_id, value=PRICE)
            self.record("buy_partnership", "buy license: Partnership (co-sign + 1st installment)", bought.tx)
            paid = partner.pay_installment(bought.license_id, PRICE)
            self.record("pay_installment", "Partnership: pay installment", paid.tx)

    def measure_revenue(self) -> None:
        payer = self.distributor(self.payer)
        owner = self.distributor(self.owner)
        with self.step("payments (with 0, 2 and 16 parents), claims, Share transfers"):
            payer.pay(self.base, PAYMENT)
            self.record("pay", "pay revenue (asset without parents)", payer.pay(self.base, PAYMENT).tx)
            payer.pay(self.child2, PAYMENT)  # each pool's first payment writes its accumulator once
            self.record("pay_2_parents", "pay revenue (child with 2 parents)", payer.pay(self.child2, PAYMENT).tx)
            payer.pay(self.child16, PAYMENT)
            self.record(f"pay_{MAX_PARENTS}_parents", f"pay revenue (child with {MAX_PARENTS} parents)",
                        payer.pay(self.child16, PAYMENT).tx)
            self.record("claim_first", "claim revenue (first claim of a holder)", owner.claim(self.base).tx)
            payer.pay(self.base, PAYMENT)
            self.record("claim", "claim revenue (later claim)", owner.claim(self.base).tx)
            shares = self.shares()
            self.record("transfer_shares", "transfer Shares (asset with revenue)",
                        shares.transfer(_address("bench recipient 1"), self.base, TRANSFER_AMOUNT))
            self.record("transfer_shares_no_revenue", "transfer Shares (asset without revenue yet)",
                        shares.transfer(_address("bench recipient 2"), self.quiet, TRANSFER_AMOUNT))

    # ------------------------------------------------------------- baseline

    def measure_baseline(self, artifacts: dict[str, Any]) -> dict[str, Any]:
        """Stock OpenZeppelin ERC-1155 transfers of the same shape (to a fresh holder), same chain."""
        with self.step("OpenZeppelin ERC-1155 baseline transfers"):
            figures: dict[str, int] = {}
            for name in ("PlainERC1155", "PlainERC1155Supply"):
                artifact = artifacts.get(name)
                if artifact is None:
                    raise InternalError(f"the baseline contract {name} did not compile")
                address, _ = deploy_contract(self.w3, self.owner, artifact)
                token = ContractClient(self.w3, address, artifact.abi, self.owner, name=name)
                token._transact("mint", self.owner.address, 1, 1_000_000)
                tx = token._transact("safeTransferFrom", self.owner.address, _address(f"bench {name} recipient"), 1,
                                     TRANSFER_AMOUNT, b"")
                figures[name] = tx.gas_used
        shares = self.operations["transfer_shares"]["gas"]
        return {
            "erc1155_transfer": figures["PlainERC1155"],
            "erc1155_supply_transfer": figures["PlainERC1155Supply"],
            "shares_transfer": shares,
            "shares_transfer_no_revenue": self.operations["transfer_shares_no_revenue"]["gas"],
            "hook_overhead": shares - figures["PlainERC1155Supply"],
            "overhead_vs_erc1155": shares - figures["PlainERC1155"],
            "note": ("transfers of 1,000 tokens to an address holding none; the Shares transfer's asset has revenue, "
                     "so the distributor hook moves both holders' debts"),
        }

    # ------------------------------------------------------------- claim scaling

    def measure_claim_scaling(self) -> dict[str, Any]:
        """First claim of the creator on fresh assets as payments and holders grow."""
        payer, owner, shares = self.distributor(self.payer), self.distributor(self.owner), self.shares()
        by_payments: list[dict[str, int]] = []
        for count in PAYMENT_COUNTS:
            with self.step(f"claim gas after {count} payment(s)"):
                asset = self.register_asset(f"scaling payments {count}").asset_id
                shares.transfer(_address("bench co-holder"), asset, 300_000)
                for _ in range(count):
                    payer.pay(asset, PAYMENT)
                claim = owner.claim(asset)
                by_payments.append({"count": count, "gas": _gas(claim.tx), "claimed": claim.total})
        by_holders: list[dict[str, int]] = []
        for holders in HOLDER_COUNTS:
            with self.step(f"claim gas with {holders} holder(s)"):
                asset = self.register_asset(f"scaling holders {holders}").asset_id
                for i in range(holders - 1):
                    shares.transfer(_address(f"bench holder {holders}/{i}"), asset, TRANSFER_AMOUNT)
                payer.pay(asset, PAYMENT)
                claim = owner.claim(asset)
                by_holders.append({"count": holders, "gas": _gas(claim.tx), "claimed": claim.total})
        gases = [p["gas"] for p in by_payments + by_holders]
        ratio = max(gases) / min(gases)
        return {
            "payments": by_payments,
            "holders": by_holders,
            "min_gas": min(gases),
            "max_gas": max(gases),
            "max_min_ratio": round(ratio, 4),
            "tolerance": FLAT_TOLERANCE,
            "flat": ratio <= 1 + FLAT_TOLERANCE,
            "note": "the creator's first claim on a fresh asset; payments series with 2 holders, holders series with 1 payment",
        }

    # ------------------------------------------------------------- helpers

    def register_identity(self, account: LocalAccount, name: str) -> TxResult:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        x25519 = X25519PrivateKey.generate()
        self._x25519[name] = x25519
        registry = self.identities(account)
        keys = registry.keys_for(bls.keygen(f"collab bench {name}".encode()), keccak(text=f"curve {name}"),
                                 x25519.public_key().public_bytes_raw())
        registered = registry.register(f"bench {name}", Role.HUMAN, keys)
        return _tx(registered.tx)

    def register_asset(self, tag: str, *, parents: list[int] | None = None, royalty_bps: int = 0) -> Any:
        digest = keccak(text=f"collab bench asset: {tag}")
        return self.assets().register(AssetInput(
            kind=AssetKind.MODEL, content_hash=digest, commitment_root=digest, key_commitment=keccak(digest),
            vault_uri=f"vault://bench/{digest.hex()[:16]}", parents=tuple(parents or ()), derivative_royalty_bps=royalty_bps,
        ))

    def post_receipt(self, license_id: int, total_calls: int) -> Any:
        """The licensee signs a cumulative receipt; the owner posts it (one compute party)."""
        owner = self.licensing(self.owner)
        receipt = CallReceipt(license_id, total_calls, request_hash(f"bench request {total_calls}".encode()))
        signature = sign_call_receipt(self.buyer, owner.domain(), receipt)
        return owner.post_call_receipt(receipt, signature, [self.compute_node.address])

    def _increase_time(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [int(seconds)])  # type: ignore[arg-type]
        self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def _address(label: str) -> str:
    """A deterministic address nobody holds a key for (a passive Share holder)."""
    return to_checksum_address(keccak(text=label)[12:])


def _tx(tx: TxResult | None) -> TxResult:
    if tx is None:
        raise InternalError("a client call returned no transaction result")
    return tx


def _gas(tx: TxResult | None) -> int:
    return _tx(tx).gas_used


def _versions() -> dict[str, Any]:
    import json

    def npm_version(package: str) -> str | None:
        try:
            return str(json.loads((NODE_MODULES / package / "package.json").read_text())["version"])
        except (OSError, ValueError, KeyError):
            return None

    anvil = report.command_version([str(anvil_binary()), "--version"])
    return {
        "anvil": anvil.removeprefix("anvil Version: ") if anvil else None,
        "solc": solc_version(),
        "evm_version": SETTINGS["evmVersion"],
        "optimizer_runs": SETTINGS["optimizer"]["runs"],
        "openzeppelin_contracts": npm_version("@openzeppelin/contracts"),
        "solady": npm_version("solady"),
        **report.package_versions(["web3", "eth-account", "py-ecc"]),
    }


# --------------------------------------------------------------------- output


def plot(results: dict[str, Any], path: Path) -> Path:
    """Bar chart of operation gas, and claim gas against payments and holders."""
    plt = report.pyplot()
    ops = results["operations"]
    base = results["baseline"]
    labels = [v["label"] for v in ops.values()] + ["OpenZeppelin ERC-1155 transfer (baseline)"]
    values = [v["gas"] for v in ops.values()] + [base["erc1155_transfer"]]
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(15, 8), gridspec_kw={"width_ratios": [2.2, 1]})
    colors = ["#4c72b0"] * len(ops) + ["#999999"]
    bars.barh(range(len(values)), values, color=colors)
    bars.set_yticks(range(len(values)), labels, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("gas used (receipt)")
    bars.set_title("collab asset layer: gas per user operation")
    for i, value in enumerate(values):
        bars.text(value, i, f" {value:,}", va="center", fontsize=7)
    scaling = results["claim_scaling"]
    for key, marker in (("payments", "o"), ("holders", "s")):
        series = scaling[key]
        lines.plot([p["count"] for p in series], [p["gas"] for p in series], marker=marker, label=f"vs {key}")
    lines.set_xscale("log")
    lines.set_ylim(0, scaling["max_gas"] * 1.3)
    lines.set_xlabel("payments / holders (log scale)")
    lines.set_ylabel("claim gas")
    lines.set_title(f"revenue claim gas (max/min {scaling['max_min_ratio']:.3f})")
    lines.legend()
    return report.save_figure(fig, path)


def render(results: dict[str, Any]) -> RenderableType:
    """The suite's tables: operations, the ERC-1155 baseline, claim scaling."""
    ops = report.table("collab asset layer: gas per user operation", ["operation", "gas"],
                       [(v["label"], v["gas"]) for v in results["operations"].values()])
    b = results["baseline"]
    baseline = report.table("Shares transfer vs OpenZeppelin ERC-1155 (same run)", ["transfer", "gas"], [
        ("OpenZeppelin ERC1155 safeTransferFrom", b["erc1155_transfer"]),
        ("OpenZeppelin ERC1155Supply safeTransferFrom", b["erc1155_supply_transfer"]),
        ("collab Shares (asset without revenue)", b["shares_transfer_no_revenue"]),
        ("collab Shares (asset with revenue)", b["shares_transfer"]),
        ("revenue-debt hook overhead (vs ERC1155Supply)", b["hook_overhead"]),
    ])
    s = results["claim_scaling"]
    rows = [(f"after {p['count']} payment(s)", p["gas"]) for p in s["payments"]]
    rows += [(f"with {p['count']} holder(s)", p["gas"]) for p in s["holders"]]
    rows.append(("max/min ratio", f"{s['max_min_ratio']:.4f} ({'flat' if s['flat'] else 'NOT flat'})"))
    scaling = report.table("revenue claim gas as payments and holders grow", ["claim", "gas"], rows)
    return Group(ops, baseline, scaling)
