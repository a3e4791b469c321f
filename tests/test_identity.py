"""Identity keystores: create/load round trip, passphrase and tampering failures, signatures."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

from collab.errors import BadInput, CollabError, NotFound, Unauthorized
from collab.identity import DEFAULT_SCRYPT_N, KEY_KINDS, PUBLIC_FILE, Identity

PASS = "correct horse battery staple"
FAST_N = 2**12  # tests only: keystores record their own cost, so load works either way


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def created(home: Path) -> Identity:
    return Identity.create(home, PASS, scrypt_n=FAST_N)


def _keys(home: Path) -> Path:
    return home / "keys"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _edit_json(path: Path, edit: object) -> None:
    data = json.loads(path.read_text())
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))


# --------------------------------------------------------------------- round trip


def test_create_then_load_round_trip_with_default_cost(home: Path) -> None:
    made = Identity.create(home, PASS)
    assert json.loads((_keys(home) / "account.json").read_text())["crypto"]["kdfparams"]["n"] == DEFAULT_SCRYPT_N
    loaded = Identity.load(home, PASS)
    assert loaded.public == made.public
    assert loaded.account.key == made.account.key
    loaded.unlock_all()
    assert loaded.bls_secret == made.bls_secret
    assert loaded.curve_secret == made.curve_secret


def test_public_halves_match_the_secrets(created: Identity, home: Path) -> None:
    import zmq
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from collab import bls

    ident = Identity.load(home, PASS)
    assert ident.address == Account.from_key(created.account.key).address
    assert ident.x25519_private_key.public_key().public_bytes_raw() == ident.x25519_public
    assert len(ident.x25519_public) == 32 and len(ident.curve_public) == 32 and len(ident.bls_public) == 128
    assert zmq.curve_public(ident.curve_secret_z85) == ident.curve_public_z85
    assert len(ident.curve_public_z85) == 40
    assert bls.sk_to_pk(ident.bls_secret) == ident.bls_public
    # X25519 works end to end: two identities agree on a shared secret.
    other = X25519PrivateKey.generate()
    assert ident.x25519_private_key.exchange(other.public_key()) == other.exchange(
        X25519PrivateKey.from_private_bytes(ident.x25519_private_key.private_bytes_raw()).public_key()
    )


def test_public_keys_are_readable_without_the_passphrase(created: Identity, home: Path) -> None:
    public = Identity.read_public(home)
    assert public == created.public
    body = json.loads((_keys(home) / PUBLIC_FILE).read_text())
    assert body["address"] == created.address
    assert body["curve_public_z85"] == created.curve_public_z85.decode()


def test_files_are_private(created: Identity, home: Path) -> None:
    assert _mode(home) == 0o700 and _mode(_keys(home)) == 0o700
    for name in [*(f"{k}.json" for k in KEY_KINDS), PUBLIC_FILE]:
        assert _mode(_keys(home) / name) == 0o600
    assert not list(_keys(home).glob(".*.tmp"))  # no temp files left behind


def test_keystores_hold_no_plaintext_secret(created: Identity, home: Path) -> None:
    created.unlock_all()
    blob = b"".join((_keys(home) / f"{k}.json").read_bytes() for k in KEY_KINDS)
    for secret in (created.account.key, created.curve_secret, created.bls_secret.to_bytes(32, "big")):
        assert bytes(secret).hex().encode() not in blob
    assert "address" not in json.loads((_keys(home) / "bls.json").read_text())


def test_two_identities_differ(tmp_path: Path) -> None:
    a = Identity.create(tmp_path / "a", PASS, scrypt_n=FAST_N)
    b = Identity.create(tmp_path / "b", PASS, scrypt_n=FAST_N)
    assert a.address != b.address and a.bls_public != b.bls_public and a.curve_public != b.curve_public


# --------------------------------------------------------------------- failures


def test_wrong_passphrase_is_unauthorized_naming_the_file(created: Identity, home: Path) -> None:
    with pytest.raises(Unauthorized) as info:
        Identity.load(home, "not the passphrase")
    assert str(info.value) == f"wrong passphrase for {_keys(home) / 'account.json'}"
    assert info.value.exit_code == 4


def test_missing_identity_is_not_found(home: Path) -> None:
    with pytest.raises(NotFound, match="no identity"):
        Identity.load(home, PASS)
    with pytest.raises(NotFound):
        Identity.read_public(home)
    assert not Identity.exists(home)


def test_refuses_to_overwrite_existing_keys(created: Identity, home: Path) -> None:
    before = {p.name: p.read_bytes() for p in _keys(home).iterdir()}
    with pytest.raises(BadInput, match="refusing to overwrite"):
        Identity.create(home, "another passphrase", scrypt_n=FAST_N)
    assert {p.name: p.read_bytes() for p in _keys(home).iterdir()} == before
    assert Identity.load(home, PASS).address == created.address


def test_refuses_to_overwrite_even_a_lone_key_file(home: Path) -> None:
    _keys(home).mkdir(parents=True)
    (_keys(home) / "bls.json").write_text("{}")
    with pytest.raises(BadInput, match="refusing to overwrite"):
        Identity.create(home, PASS, scrypt_n=FAST_N)
    assert (_keys(home) / "bls.json").read_text() == "{}"


def test_concurrent_creates_leave_exactly_one_consistent_identity(home: Path) -> None:
    results: list[object] = []

    def create() -> None:
        try:
            results.append(Identity.create(home, PASS, scrypt_n=FAST_N))
        except CollabError as exc:
            results.append(exc)

    threads = [threading.Thread(target=create) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if isinstance(r, Identity)]
    assert len(winners) == 1 and all(isinstance(r, BadInput) for r in results if r not in winners)
    loaded = Identity.load(home, PASS)
    loaded.unlock_all()  # every file belongs to the same identity
    assert loaded.public == winners[0].public  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda p: p.write_text("{not json"), "malformed keystore"),
        (lambda p: p.write_text("[]"), "malformed keystore"),
        (lambda p: _edit_json(p, lambda d: d.pop("crypto")), "missing field 'crypto'"),
        (lambda p: _edit_json(p, lambda d: d.update(version=4)), "version 3"),
        (lambda p: _edit_json(p, lambda d: d["crypto"].update(ciphertext="zz")), "malformed keystore"),
        (lambda p: _edit_json(p, lambda d: d["crypto"]["kdfparams"].update(n=2**30)), "unreasonable scrypt"),
        (lambda p: p.unlink(), "is missing"),
    ],
)
def test_malformed_keystore_is_bad_input_naming_the_file(created: Identity, home: Path, damage: object, needle: str) -> None:
    target = _keys(home) / "x25519.json"
    damage(target)  # type: ignore[operator]
    with pytest.raises(BadInput, match=needle) as info:
        Identity.load(home, PASS)
    assert str(target) in str(info.value)


def test_malformed_account_keystore_is_bad_input_not_a_passphrase_error(created: Identity, home: Path) -> None:
    target = _keys(home) / "account.json"
    target.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(BadInput, match="account.json"):
        Identity.load(home, PASS)


def test_flipped_ciphertext_in_a_later_keystore_is_reported_as_corruption(created: Identity, home: Path) -> None:
    target = _keys(home) / "curve.json"

    def flip(data: dict) -> None:
        text = data["crypto"]["ciphertext"]
        data["crypto"]["ciphertext"] = ("0" if text[0] != "0" else "1") + text[1:]

    _edit_json(target, flip)
    ident = Identity.load(home, PASS)  # the account (and so the passphrase) is fine
    with pytest.raises(BadInput, match=f"{target}.*corrupted"):
        _ = ident.curve_secret
    with pytest.raises(BadInput):
        ident.unlock_all()


def test_keystore_swapped_from_another_identity_is_detected(tmp_path: Path) -> None:
    a = Identity.create(tmp_path / "a", PASS, scrypt_n=FAST_N)
    Identity.create(tmp_path / "b", PASS, scrypt_n=FAST_N)
    (tmp_path / "a" / "keys" / "bls.json").write_bytes((tmp_path / "b" / "keys" / "bls.json").read_bytes())
    ident = Identity.load(tmp_path / "a", PASS)
    assert ident.address == a.address
    with pytest.raises(BadInput, match="does not match the public key"):
        ident.bls_sign(b"consent")


def test_tampered_public_file_is_bad_input(created: Identity, home: Path) -> None:
    other = Account.create().address
    _edit_json(_keys(home) / PUBLIC_FILE, lambda d: d.update(address=other))
    with pytest.raises(BadInput, match=f"names {other}"):
        Identity.load(home, PASS)


def test_malformed_public_file_is_bad_input(created: Identity, home: Path) -> None:
    _edit_json(_keys(home) / PUBLIC_FILE, lambda d: d.update(bls_public="0x1234"))
    with pytest.raises(BadInput, match="malformed public key file"):
        Identity.read_public(home)


def test_interrupted_create_is_recovered_by_load(created: Identity, home: Path) -> None:
    (_keys(home) / PUBLIC_FILE).unlink()
    ident = Identity.load(home, PASS)
    assert ident.public == created.public
    assert Identity.read_public(home) == created.public


def test_empty_passphrase_is_refused(home: Path) -> None:
    with pytest.raises(BadInput):
        Identity.create(home, "", scrypt_n=FAST_N)
    assert not Identity.exists(home)


# --------------------------------------------------------------------- signatures


def test_sign_message_recovers_to_the_address(created: Identity) -> None:
    signed = created.sign_message("hello collab")
    assert Account.recover_message(encode_defunct(text="hello collab"), signature=signed.signature) == created.address
    raw = created.sign_message(b"\x00\x01")
    assert Account.recover_message(encode_defunct(primitive=b"\x00\x01"), signature=raw.signature) == created.address


def test_sign_typed_data_recovers_to_the_address(created: Identity) -> None:
    domain = {"name": "collab", "version": "1", "chainId": 31337, "verifyingContract": "0x" + "11" * 20}
    types = {"Request": [{"name": "sender", "type": "address"}, {"name": "nonce", "type": "uint256"}]}
    message = {"sender": created.address, "nonce": 7}
    signed = created.sign_typed_data(domain, types, message)
    recovered = Account.recover_message(encode_typed_data(domain, types, message), signature=signed.signature)
    assert recovered == created.address


def test_bls_signature_verifies_and_binds_the_message(created: Identity) -> None:
    from collab import bls

    sig = created.bls_sign(b"attribution root")
    assert len(sig) == 256
    assert bls.verify(created.bls_public, b"attribution root", sig)
    assert not bls.verify(created.bls_public, b"another root", sig)


def test_bls_proof_of_possession_is_bound_to_account_chain_and_registry(created: Identity) -> None:
    registry = "0x" + "22" * 20
    pop = created.bls_proof_of_possession(31337, registry)
    assert len(pop) == 256
    from collab import bls

    assert bls.verify_possession(created.bls_public, pop, 31337, registry, created.address)
    assert pop != created.bls_proof_of_possession(1, registry)
    assert pop != created.bls_proof_of_possession(31337, "0x" + "33" * 20)


# --------------------------------------------------------------------- Sahara ID on a real chain


@pytest.mark.slow
def test_registry_keys_register_on_the_real_identity_registry(
    home: Path, w3: object, deployment: object, chain_snapshot: str
) -> None:
    from chain.clients.identity_registry import IdentityRegistryClient, Keys, Role
    from chain.errors import revert_class

    ident = Identity.create(home, PASS, scrypt_n=FAST_N)
    registry = IdentityRegistryClient.from_deployment(deployment, w3, ident.account)  # type: ignore[arg-type]
    registry.w3.provider.make_request("anvil_setBalance", [ident.address, hex(10**20)])  # gas and stake

    chain_id = registry.w3.eth.chain_id
    keys = ident.registry_keys(chain_id, registry.address)
    assert keys.bls_pubkey == ident.bls_public and keys.curve_key == ident.curve_public

    # A proof made for another registry address is refused on-chain.
    stolen = Keys(*ident.registry_keys(chain_id, "0x" + "44" * 20))
    with pytest.raises(revert_class("InvalidProofOfPossession")):
        registry.register("alice", Role.HUMAN, stolen)

    registered = registry.register("alice", Role.HUMAN, Keys(*keys))
    on_chain = registry.identity(registered.id)
    assert on_chain.keys.bls_pubkey == ident.bls_public
    assert on_chain.keys.x25519_key == ident.x25519_public
