"""Receipts: soulbound (ERC-5192) attribution, minted by settlement only."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.client import default_artifacts, deploy_contract
from chain.clients.receipts import (
    ERC721_INTERFACE_ID,
    ERC5192_INTERFACE_ID,
    ContributionKind,
    Receipt,
    ReceiptsClient,
)
from chain.deployment import Deployment
from chain.errors import revert_class
from collab.errors import NotFound, Unauthorized

CLAIM = Web3.keccak(text="claim-1")


@pytest.fixture
def receipts(w3: Web3, deployment: Deployment, deployer: LocalAccount, chain_snapshot: str) -> ReceiptsClient:
    """The Receipts contract as the deployer (settlement role)."""
    return ReceiptsClient.from_deployment(deployment, w3, deployer)


def mint(receipts: ReceiptsClient, to: LocalAccount, weight: int = 7, kind: ContributionKind = ContributionKind.TRAINING_UPDATE) -> int:
    return receipts.mint(to.address, Receipt(asset_id=3, claim_id=CLAIM, weight=weight, kind=kind)).token_id


def test_mint_records_the_contribution_and_locks_it(receipts: ReceiptsClient, accounts: list[LocalAccount]) -> None:
    before = receipts.receipt_count()
    minted = receipts.mint(accounts[1].address, Receipt(3, CLAIM, 42, ContributionKind.MERGE_INPUT))
    assert minted.token_id == before + 1 == receipts.receipt_count()
    assert minted.to == accounts[1].address and minted.locked
    assert minted.receipt == Receipt(3, CLAIM, 42, ContributionKind.MERGE_INPUT)
    assert minted.tx is not None and [e.name for e in minted.tx.events] == ["Transfer", "ReceiptMinted", "Locked"]
    assert receipts.receipt(minted.token_id) == minted.receipt
    assert receipts.owner_of(minted.token_id) == accounts[1].address
    assert receipts.locked(minted.token_id)
    second = mint(receipts, accounts[1], kind=ContributionKind.DATA)
    assert receipts.receipts_of(accounts[1].address) == [minted.token_id, second]
    assert receipts.balance_of(accounts[1].address) == 2


def test_mint_is_settlement_only(receipts: ReceiptsClient, accounts: list[LocalAccount]) -> None:
    for outsider in (accounts[1], accounts[2]):
        with pytest.raises(revert_class("AccessControlUnauthorizedAccount")) as err:
            receipts.with_account(outsider).mint(outsider.address, Receipt(1, CLAIM, 1, ContributionKind.COMPUTE))
        assert isinstance(err.value, Unauthorized)


def test_mint_to_the_zero_address_reverts(receipts: ReceiptsClient) -> None:
    with pytest.raises(revert_class("ERC721InvalidReceiver")):
        receipts.mint("0x" + "00" * 20, Receipt(1, CLAIM, 1, ContributionKind.COMPUTE))


def test_every_transfer_reverts_soulbound(receipts: ReceiptsClient, accounts: list[LocalAccount]) -> None:
    holder, other = accounts[1], accounts[2]
    token = mint(receipts, holder)
    own = receipts.with_account(holder)
    attempts: list[Callable[[], object]] = [
        lambda: own.transfer_from(holder.address, other.address, token),
        lambda: own.safe_transfer_from(holder.address, other.address, token),
        lambda: own.safe_transfer_from(holder.address, other.address, token, b"data"),
        lambda: receipts.with_account(other).transfer_from(holder.address, other.address, token),
    ]
    for attempt in attempts:
        with pytest.raises(revert_class("Soulbound")) as err:
            attempt()
        assert err.value.error_args == {"tokenId": token}
    assert receipts.owner_of(token) == holder.address


def test_every_approval_reverts_soulbound(receipts: ReceiptsClient, accounts: list[LocalAccount]) -> None:
    holder = accounts[1]
    token = mint(receipts, holder)
    with pytest.raises(revert_class("Soulbound")) as err:
        receipts.with_account(holder).approve(accounts[2].address, token)
    assert err.value.error_args == {"tokenId": token}
    with pytest.raises(revert_class("Soulbound")) as err:
        receipts.with_account(holder).set_approval_for_all(accounts[2].address, True)
    assert err.value.error_args == {"tokenId": 0}


def test_supports_erc721_and_erc5192(receipts: ReceiptsClient) -> None:
    assert receipts.supports_interface(ERC5192_INTERFACE_ID)
    assert receipts.supports_interface(ERC721_INTERFACE_ID)
    assert receipts.supports_interface(bytes.fromhex("01ffc9a7"))  # ERC-165
    assert not receipts.supports_interface(bytes.fromhex("deadbeef"))
    assert ERC5192_INTERFACE_ID == Web3.keccak(text="locked(uint256)")[:4]


def test_unknown_receipts(receipts: ReceiptsClient) -> None:
    missing = receipts.receipt_count() + 1
    with pytest.raises(revert_class("UnknownReceipt")) as err:
        receipts.receipt(missing)
    assert isinstance(err.value, NotFound)
    with pytest.raises(revert_class("ERC721NonexistentToken")):
        receipts.locked(missing)
    assert receipts.receipts_of(Web3.to_checksum_address("0x" + "99" * 20)) == []


def test_settlement_role_is_wired(receipts: ReceiptsClient, deployer: LocalAccount) -> None:
    assert receipts.settlement_role() == Web3.keccak(text="SETTLEMENT_ROLE")
    assert receipts.has_role(receipts.settlement_role(), deployer.address)


def test_minted_history_and_refused_approvals_read_back(receipts: ReceiptsClient, w3: Web3, accounts: list[LocalAccount]) -> None:
    start = w3.eth.block_number + 1
    a = mint(receipts, accounts[1], weight=5)
    b = mint(receipts, accounts[2], weight=9, kind=ContributionKind.COMPUTE)
    history = receipts.minted(from_block=start)
    assert [(m.token_id, m.to, m.receipt.weight, m.locked) for m in history] == [
        (a, accounts[1].address, 5, True), (b, accounts[2].address, 9, True)
    ]
    assert receipts.get_approved(a) == "0x" + "00" * 20
    assert not receipts.is_approved_for_all(accounts[1].address, accounts[2].address)


def test_revoked_settlement_role_can_no_longer_mint(receipts: ReceiptsClient, deployer: LocalAccount, accounts: list[LocalAccount]) -> None:
    receipts.revoke_role(receipts.settlement_role(), deployer.address)
    with pytest.raises(revert_class("AccessControlUnauthorizedAccount")):
        mint(receipts, accounts[1])


@pytest.mark.parametrize("contract", ["Receipts", "IdentityRegistry", "AssetRegistry"])
def test_constructors_refuse_zero_addresses(w3: Web3, deployer: LocalAccount, contract: str) -> None:
    zero = "0x" + "00" * 20
    args = {"Receipts": [zero], "IdentityRegistry": [deployer.address, zero], "AssetRegistry": [zero, deployer.address, deployer.address]}
    errors = {"Receipts": "ReceiptsZeroAddress", "IdentityRegistry": "IdentityZeroAddress", "AssetRegistry": "AssetZeroAddress"}
    with pytest.raises(revert_class(errors[contract])):
        deploy_contract(w3, deployer, default_artifacts()[contract], *args[contract])
