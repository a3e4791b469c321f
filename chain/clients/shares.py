"""Typed client of ``Shares``: the ERC-1155 revenue rights, one token id per asset.

Besides the token calls it answers "which assets does this account hold
Shares of?" from the Transfer logs, because ERC-1155 has no per-holder
enumeration and the CLI's ``revenue balance`` needs exactly that list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from eth_utils import to_checksum_address
from web3 import Web3

from chain.client import ContractClient, Event, TxResult, rpc_guard
from collab.errors import Unauthorized

_TRANSFER_SINGLE = "TransferSingle(address,address,address,uint256,uint256)"
_TRANSFER_BATCH = "TransferBatch(address,address,address,uint256[],uint256[])"


@dataclass(frozen=True)
class SharesTransferred:
    """One ERC-1155 movement of Shares (``TransferSingle``, or one entry of ``TransferBatch``).

    ``sender`` is the zero address on a mint.
    """

    operator: str
    sender: str
    receiver: str
    asset_id: int
    amount: int

    @classmethod
    def from_event(cls, event: Event) -> list[SharesTransferred]:
        """Flatten a ``TransferSingle``/``TransferBatch`` event into movements."""
        a = event.args
        if event.name == "TransferSingle":
            return [cls(a["operator"], a["from"], a["to"], int(a["id"]), int(a["value"]))]
        if event.name == "TransferBatch":
            return [
                cls(a["operator"], a["from"], a["to"], int(i), int(v))
                for i, v in zip(a["ids"], a["values"], strict=True)
            ]
        return []


def transfers_in(result: TxResult) -> list[SharesTransferred]:
    """Every Shares movement a transaction produced, in log order."""
    moved: list[SharesTransferred] = []
    for event in result.events:
        moved.extend(SharesTransferred.from_event(event))
    return moved


class SharesClient(ContractClient):
    """Calls on the deployed ``Shares`` contract."""

    CONTRACT = "Shares"

    # ------------------------------------------------------------------ views

    def balance_of(self, holder: str, asset_id: int) -> int:
        """Shares of ``asset_id`` held by ``holder``."""
        return int(self._call("balanceOf", to_checksum_address(holder), int(asset_id)))

    def balances_of(self, holder: str, asset_ids: Sequence[int]) -> dict[int, int]:
        """Balances of several assets in one call."""
        ids = [int(i) for i in asset_ids]
        values = self._call("balanceOfBatch", [to_checksum_address(holder)] * len(ids), ids)
        return {i: int(v) for i, v in zip(ids, values, strict=True)}

    def holder_balances(self, asset_id: int, holders: Sequence[str]) -> dict[str, int]:
        """Balances of one asset for several holders in one call (checksummed address -> Shares)."""
        accounts = [to_checksum_address(h) for h in holders]
        if not accounts:
            return {}
        values = self._call("balanceOfBatch", accounts, [int(asset_id)] * len(accounts))
        return {a: int(v) for a, v in zip(accounts, values, strict=True)}

    def total_supply(self, asset_id: int) -> int:
        """Shares of ``asset_id`` in circulation."""
        return int(self._call("totalSupply", int(asset_id)))

    def distributor(self) -> str:
        """Address of the RevenueDistributor wired by ``initialize`` (zero before)."""
        return to_checksum_address(self._call("distributor"))

    def minter_role(self) -> bytes:
        """The role id of minters (the AssetRegistry)."""
        return bytes(self._call("MINTER_ROLE"))

    def settlement_role(self) -> bytes:
        """The role id of settlement minters."""
        return bytes(self._call("SETTLEMENT_ROLE"))

    def has_role(self, role: bytes, account: str) -> bool:
        """Whether ``account`` holds ``role``."""
        return bool(self._call("hasRole", role, to_checksum_address(account)))

    def is_approved_for_all(self, holder: str, operator: str) -> bool:
        """Whether ``operator`` may move all of ``holder``'s Shares."""
        return bool(self._call("isApprovedForAll", to_checksum_address(holder), to_checksum_address(operator)))

    def assets_received(self, holder: str, from_block: int = 0) -> list[int]:
        """Asset ids ``holder`` ever received Shares of (mints included), ascending.

        Scans ``TransferSingle``/``TransferBatch`` logs with ``to == holder``;
        pass the deployment's deploy block as ``from_block`` to skip history.
        """
        topic = "0x" + "00" * 12 + to_checksum_address(holder)[2:].lower()
        signatures = ["0x" + Web3.keccak(text=s).hex().removeprefix("0x") for s in (_TRANSFER_SINGLE, _TRANSFER_BATCH)]
        with rpc_guard(self.w3):
            logs = self.w3.eth.get_logs(
                {"address": self.address, "fromBlock": int(from_block), "toBlock": "latest", "topics": [signatures, None, None, topic]}  # type: ignore[typeddict-item]
            )
        ids: set[int] = set()
        for log in logs:
            event = self.registry.decode_log(log)
            if event is not None:
                ids.update(m.asset_id for m in SharesTransferred.from_event(event))
        return sorted(ids)

    def assets_held(self, holder: str, from_block: int = 0) -> dict[int, int]:
        """Asset id -> current balance, for every asset ``holder`` holds Shares of now."""
        received = self.assets_received(holder, from_block)
        if not received:
            return {}
        return {i: b for i, b in self.balances_of(holder, received).items() if b > 0}

    # ------------------------------------------------------------------ transactions

    def initialize(self, distributor: str) -> TxResult:
        """Wire the RevenueDistributor (admin, once)."""
        return self._transact("initialize", to_checksum_address(distributor))

    def mint(self, to: str, asset_id: int, amount: int) -> TxResult:
        """Mint Shares (minter or settlement role)."""
        return self._transact("mint", to_checksum_address(to), int(asset_id), int(amount))

    def transfer(self, to: str, asset_id: int, amount: int, data: bytes = b"") -> TxResult:
        """Move the account's own Shares to ``to``."""
        return self._transact("safeTransferFrom", self._me(), to_checksum_address(to), int(asset_id), int(amount), data)

    def transfer_from(self, holder: str, to: str, asset_id: int, amount: int, data: bytes = b"") -> TxResult:
        """Move ``holder``'s Shares as an approved operator."""
        return self._transact(
            "safeTransferFrom", to_checksum_address(holder), to_checksum_address(to), int(asset_id), int(amount), data
        )

    def transfer_batch(self, to: str, asset_ids: Sequence[int], amounts: Sequence[int], data: bytes = b"") -> TxResult:
        """Move several of the account's own Shares in one transaction."""
        return self._transact(
            "safeBatchTransferFrom", self._me(), to_checksum_address(to), [int(i) for i in asset_ids], [int(a) for a in amounts], data
        )

    def set_approval_for_all(self, operator: str, approved: bool) -> TxResult:
        """Let ``operator`` move all of the account's Shares (or stop it)."""
        return self._transact("setApprovalForAll", to_checksum_address(operator), bool(approved))

    def grant_role(self, role: bytes, account: str) -> TxResult:
        """Grant ``role`` (admin only)."""
        return self._transact("grantRole", role, to_checksum_address(account))

    def _me(self) -> str:
        """The signing account's address (Unauthorized without one)."""
        if self.account is None:
            raise Unauthorized("moving Shares needs a signing account", hint="unlock an identity (COLLAB_PASSPHRASE)")
        return str(self.account.address)
