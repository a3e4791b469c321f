"""collab.bls: G2Basic signatures in EIP-2537 encoding, and agreement with the on-chain check."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount
from py_ecc.optimized_bls12_381 import G1, add, curve_order, field_modulus, multiply, neg
from web3 import Web3

from chain.clients.identity_registry import IdentityRegistryClient, Keys
from chain.deployment import Deployment
from chain.paths import NODE_MODULES
from chain.errors import revert_class
from collab import bls
from collab.errors import BadInput

CURVE = b"\x01" * 32
X25519 = b"\x02" * 32


@pytest.fixture(scope="module")
def alice() -> int:
    return bls.keygen(b"alice")


@pytest.fixture(scope="module")
def bob() -> int:
    return bls.keygen(b"bob")


# ------------------------------------------------------------------ keys and encodings


def test_keygen_is_deterministic_from_a_seed_and_random_without_one() -> None:
    assert bls.keygen(b"seed") == bls.keygen(b"seed")
    assert bls.keygen(b"seed") != bls.keygen(b"other seed")
    assert bls.keygen() != bls.keygen()
    assert 0 < bls.keygen() < curve_order


def test_secret_bytes_round_trip_and_reject_out_of_range() -> None:
    sk = bls.keygen(b"x")
    assert bls.secret_from_bytes(bls.secret_to_bytes(sk)) == sk
    with pytest.raises(BadInput):
        bls.secret_from_bytes(bytes(32))
    with pytest.raises(BadInput):
        bls.secret_from_bytes(curve_order.to_bytes(32, "big"))
    with pytest.raises(BadInput):
        bls.secret_from_bytes(b"\x01" * 31)


def test_public_key_uses_eip2537_layout(alice: int) -> None:
    pk = bls.sk_to_pk(alice)
    assert len(pk) == 128
    assert pk[:16] == bytes(16) and pk[64:80] == bytes(16)
    assert bls.encode_g1(bls.decode_g1(pk)) == pk
    x = int.from_bytes(pk[16:64], "big")
    assert 0 < x < field_modulus


def test_g2_encoding_round_trips(alice: int) -> None:
    sig = bls.sign(alice, b"message")
    assert len(sig) == 256
    assert all(sig[i : i + 16] == bytes(16) for i in range(0, 256, 64))
    assert bls.encode_g2(bls.decode_g2(sig)) == sig


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p[:-1],  # short
        lambda p: p + b"\x00",  # long
        lambda p: b"\x01" + p[1:],  # nonzero padding
        lambda p: p[:16] + b"\xff" * 48 + p[64:],  # x >= field modulus
        lambda p: p[:127] + bytes([p[127] ^ 1]),  # off the curve
    ],
)
def test_malformed_g1_points_are_rejected(alice: int, mutate: Callable[[bytes], bytes]) -> None:
    with pytest.raises(BadInput):
        bls.decode_g1(mutate(bls.sk_to_pk(alice)))


def test_g1_point_outside_the_subgroup_is_rejected() -> None:
    # A point on y^2 = x^3 + 4 found by trying x = 1, 2, ...: the cofactor is
    # large, so such a point is (overwhelmingly) not in the prime-order subgroup.
    from py_ecc.fields import optimized_bls12_381_FQ as FQ

    for x in range(1, 100):
        rhs = FQ(x) ** 3 + FQ(4)
        y = rhs ** ((field_modulus + 1) // 4)
        if y * y == rhs:
            break
    encoded = bytes(16) + int(x).to_bytes(48, "big") + bytes(16) + int(y).to_bytes(48, "big")
    with pytest.raises(BadInput, match="subgroup"):
        bls.decode_g1(encoded)


# ------------------------------------------------------------------ signatures


def test_sign_verify_and_every_way_to_fail(alice: int, bob: int) -> None:
    pk, sig = bls.sk_to_pk(alice), bls.sign(alice, b"consent")
    assert bls.verify(pk, b"consent", sig)
    assert not bls.verify(pk, b"consent!", sig)
    assert not bls.verify(bls.sk_to_pk(bob), b"consent", sig)
    assert not bls.verify(pk, b"consent", bls.sign(bob, b"consent"))
    assert not bls.verify(pk[:-1], b"consent", sig)
    assert not bls.verify(pk, b"consent", sig[:-1])
    assert not bls.verify(bytes(128), b"consent", bytes(256))  # infinity key and signature


def test_aggregate_signature_verifies_against_the_summed_keys(alice: int, bob: int) -> None:
    carol = bls.keygen(b"carol")
    keys = [bls.sk_to_pk(k) for k in (alice, bob, carol)]
    agg = bls.aggregate_signatures([bls.sign(k, b"root") for k in (alice, bob, carol)])
    assert bls.verify_aggregate(keys, b"root", agg)
    assert bls.verify(bls.aggregate_pubkeys(keys), b"root", agg)
    assert not bls.verify_aggregate(keys[:2], b"root", agg)
    assert not bls.verify_aggregate(keys, b"other root", agg)
    with pytest.raises(BadInput):
        bls.aggregate_signatures([])
    with pytest.raises(BadInput):
        bls.aggregate_pubkeys([])


def test_rogue_key_forges_an_aggregate_but_cannot_prove_possession(alice: int) -> None:
    """Why the registry demands a proof of possession: without it, pk' = pk_m - pk_a
    lets mallory alone produce an 'aggregate of alice and mallory'."""
    mallory = bls.keygen(b"mallory")
    pk_alice = bls.decode_g1(bls.sk_to_pk(alice))
    rogue = bls.encode_g1(add(multiply(G1, mallory), neg(pk_alice)))
    forged = bls.sign(mallory, b"root")
    assert bls.verify_aggregate([bls.sk_to_pk(alice), rogue], b"root", forged)
    # The best mallory can offer for the rogue key is a pop made with her own secret: it fails.
    registry, account = "0x" + "11" * 20, "0x" + "22" * 20
    pop = bls.sign(mallory, bls.pop_message(31337, registry, account, rogue))
    assert not bls.verify_possession(rogue, pop, 31337, registry, account)


def test_pop_message_is_abi_encode_packed_of_the_spec() -> None:
    pk = bls.sk_to_pk(bls.keygen(b"k"))
    registry, account = "0x" + "ab" * 20, "0x" + "cd" * 20
    msg = bls.pop_message(7, registry, account, pk)
    assert msg == b"collab-bls-pop" + (7).to_bytes(32, "big") + b"\xab" * 20 + b"\xcd" * 20 + pk
    with pytest.raises(BadInput):
        bls.pop_message(7, registry, account, pk[:64])
    with pytest.raises(BadInput):
        bls.pop_message(7, "not an address", account, pk)


# ------------------------------------------------------------------ Python and the chain agree


def _keys(registry: IdentityRegistryClient, sk: int, pop_account: str, chain_id: int | None = None) -> tuple[Keys, bool]:
    """Keys whose pop is made for ``pop_account``; also Python's verdict for the registry's caller."""
    cid = registry.w3.eth.chain_id if chain_id is None else chain_id
    pk = bls.sk_to_pk(sk)
    pop = bls.prove_possession(sk, cid, registry.address, pop_account)
    assert registry.account is not None
    python_ok = bls.verify_possession(pk, pop, registry.w3.eth.chain_id, registry.address, registry.account.address)
    return Keys(CURVE, X25519, pk, pop), python_ok


def test_python_and_chain_accept_the_same_proof_of_possession(
    w3: Web3, deployment: Deployment, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    registry = IdentityRegistryClient.from_deployment(deployment, w3, accounts[5])
    keys, python_ok = _keys(registry, bls.keygen(b"agree"), accounts[5].address)
    assert python_ok
    assert registry.register("agree", "human", keys).id > 0


def test_python_and_chain_reject_the_same_proof_of_possession(
    w3: Web3, deployment: Deployment, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    registry = IdentityRegistryClient.from_deployment(deployment, w3, accounts[5])
    # A pop made for another account (replayed by accounts[5]).
    keys, python_ok = _keys(registry, bls.keygen(b"disagree"), accounts[6].address)
    assert not python_ok
    with pytest.raises(revert_class("InvalidProofOfPossession")):
        registry.register("replayer", "human", keys)


def test_solady_hash_to_curve_uses_the_g2basic_dst() -> None:
    """BLS.hashToG2 builds its DST from two string literals; together they must be G2Basic's."""
    source = (NODE_MODULES / "solady" / "src" / "utils" / "ext" / "ithaca" / "BLS.sol").read_text()
    body = source[source.index("function dstPrime") :]
    first, second = re.findall(r'"([^"]+)"\)', body)[:2]
    dst_prime = (first + second).encode().decode("unicode_escape").encode("latin-1")
    assert dst_prime[:-1] == bls.DST == b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_"
    assert dst_prime[-1] == len(bls.DST)  # the I2OSP(len(DST), 1) suffix of DST_prime
