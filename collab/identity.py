"""An identity's four keys, encrypted at rest, and the signatures made with them.

A home's ``keys/`` directory holds one Web3 Secret Storage (v3) keystore per
secret, all under the same passphrase:

- ``account.json``: the secp256k1 account (transactions, EIP-191/712 signatures);
- ``x25519.json``: the X25519 key that unwraps vault keys;
- ``curve.json``: the CurveZMQ transport secret;
- ``bls.json``: the BLS12-381 key for consent signatures;

plus ``public.json`` with the public halves, readable without the passphrase
(what ``IdentityRegistry`` registers and what peers need).

One format for every 32-byte secret means one audited decryption path
(eth-account's scrypt + AES-128-CTR + MAC). Secrets are decrypted lazily:
:meth:`Identity.load` checks every file's structure and unlocks the account
(which proves the passphrase), and the other keys are decrypted on first use,
so a CLI command that only signs a transaction pays for one scrypt run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from eth_account import Account
from eth_account.datastructures import SignedMessage
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_keys.constants import SECPK1_N
from eth_utils import to_checksum_address

from collab.config import ensure_private_dir
from collab.errors import BadInput, NotFound, Unauthorized

KEYS_DIR = "keys"
PUBLIC_FILE = "public.json"
KEY_KINDS = ("account", "x25519", "curve", "bls")
FORMAT_VERSION = 1
# scrypt N = 2**16 (64 MiB, ~0.16 s here) instead of geth's 2**18 (~0.7 s): a
# home has four keystores and every CLI command unlocks at least one, on
# 2 shared cores. Still a memory-hard cost of 2**16 * 128 * 8 bytes per guess.
DEFAULT_SCRYPT_N = 2**16
FILE_MODE = 0o600


# --------------------------------------------------------------------- public halves


@dataclass(frozen=True)
class PublicKeys:
    """The public halves of an identity's keys (the content of ``public.json``)."""

    address: str
    x25519_public: bytes
    curve_public: bytes
    bls_public: bytes

    @property
    def curve_public_z85(self) -> bytes:
        """The CurveZMQ public key as pyzmq's sockets take it (40 Z85 characters)."""
        from zmq.utils import z85

        return z85.encode(self.curve_public)

    def to_json(self) -> dict[str, Any]:
        """JSON body of ``public.json`` (hex byte strings; Z85 for ZMQ convenience)."""
        return {
            "version": FORMAT_VERSION,
            "address": self.address,
            "x25519_public": "0x" + self.x25519_public.hex(),
            "curve_public": "0x" + self.curve_public.hex(),
            "curve_public_z85": self.curve_public_z85.decode("ascii"),
            "bls_public": "0x" + self.bls_public.hex(),
        }

    @classmethod
    def from_json(cls, data: Any, source: Path) -> PublicKeys:
        """Parse ``public.json``; BadInput naming the file when anything is off."""
        try:
            if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
                raise ValueError(f"expected a version {FORMAT_VERSION} object")
            keys = cls(
                address=to_checksum_address(data["address"]),
                x25519_public=_hex_bytes(data["x25519_public"], 32),
                curve_public=_hex_bytes(data["curve_public"], 32),
                bls_public=_hex_bytes(data["bls_public"], 128),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"malformed public key file {source}: {_describe(exc)}") from None
        return keys


class RegistryKeys(NamedTuple):
    """The public keys ``IdentityRegistry.register`` takes (``IIdentityRegistry.Keys``, in field order)."""

    curve_key: bytes
    x25519_key: bytes
    bls_pubkey: bytes
    bls_pop: bytes


# --------------------------------------------------------------------- the identity


class Identity:
    """One home's keys: public halves always, secrets once unlocked with the passphrase."""

    def __init__(self, home: Path, public: PublicKeys, passphrase: str, account_key: bytes) -> None:
        # The passphrase stays in memory so that the other keys can be decrypted on first use.
        self.home = Path(home)
        self.public = public
        self._passphrase = passphrase
        self._secrets: dict[str, bytes] = {"account": account_key}
        self._lock = threading.Lock()

    # ------------------------------------------------------------- paths and existence

    @staticmethod
    def keys_dir(home: Path | str) -> Path:
        """``<home>/keys``."""
        return Path(home) / KEYS_DIR

    @classmethod
    def exists(cls, home: Path | str) -> bool:
        """Whether ``home`` already holds an identity (any key file counts)."""
        keys = cls.keys_dir(home)
        return any((keys / f"{kind}.json").exists() for kind in KEY_KINDS) or (keys / PUBLIC_FILE).exists()

    @classmethod
    def read_public(cls, home: Path | str) -> PublicKeys:
        """The public halves, without the passphrase (NotFound when there is no identity)."""
        path = cls.keys_dir(home) / PUBLIC_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"no identity in {Path(home)}", hint="create one with `collab id init`") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise BadInput(f"malformed public key file {path}: {_describe(exc)}") from None
        return PublicKeys.from_json(data, path)

    # ------------------------------------------------------------- create and load

    @classmethod
    def create(cls, home: Path | str, passphrase: str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> Identity:
        """Generate all four keys and write them encrypted; never overwrites existing keys."""
        if not passphrase:
            raise BadInput("the passphrase must not be empty")
        if scrypt_n < 2 or scrypt_n & (scrypt_n - 1):
            raise BadInput(f"scrypt N must be a power of two, got {scrypt_n}")
        home = Path(home)
        if cls.exists(home):
            raise BadInput(
                f"an identity already exists in {cls.keys_dir(home)}; refusing to overwrite its keys",
                hint="use another --home",
            )
        ensure_private_dir(home)
        keys_dir = ensure_private_dir(cls.keys_dir(home))

        secret = {
            "account": _random_scalar(),
            "x25519": _generate(_x25519_secret),
            "curve": _generate(_curve_secret),
            "bls": _bls_secret_bytes(),
        }
        public = PublicKeys(
            address=Account.from_key(secret["account"]).address,
            x25519_public=_x25519_public(secret["x25519"]),
            curve_public=_curve_public(secret["curve"]),
            bls_public=_bls_public(secret["bls"]),
        )
        for kind in KEY_KINDS:
            keystore = Account.encrypt(secret[kind], passphrase, kdf="scrypt", iterations=scrypt_n)
            if kind != "account":
                keystore.pop("address", None)  # that would be the secret misread as a secp256k1 key
            keystore["collab"] = {"kind": kind, "version": FORMAT_VERSION}
            _write_new(keys_dir / f"{kind}.json", keystore)
        _write_new(keys_dir / PUBLIC_FILE, public.to_json())
        identity = cls(home, public, passphrase, secret["account"])
        identity._secrets.update(secret)
        return identity

    @classmethod
    def load(cls, home: Path | str, passphrase: str) -> Identity:
        """Unlock the identity in ``home``.

        Every keystore's structure is checked and the account is decrypted now;
        the other secrets are decrypted on first use. Wrong passphrase:
        Unauthorized; a malformed or tampered file: BadInput naming it; no
        identity: NotFound.
        """
        home = Path(home)
        keys_dir = cls.keys_dir(home)
        if not cls.exists(home):
            raise NotFound(f"no identity in {home}", hint="create one with `collab id init`")
        stores = {kind: _read_keystore(keys_dir / f"{kind}.json") for kind in KEY_KINDS}
        account_key = _decrypt(stores["account"], passphrase, keys_dir / "account.json", first=True)
        address = Account.from_key(account_key).address

        public_path = keys_dir / PUBLIC_FILE
        if public_path.exists():
            public = cls.read_public(home)
            if public.address != address:
                raise BadInput(f"{public_path} names {public.address} but account.json holds {address}")
            return cls(home, public, passphrase, account_key)
        # An interrupted create left the keystores but not public.json: rebuild it.
        secret = {kind: _decrypt(stores[kind], passphrase, keys_dir / f"{kind}.json") for kind in KEY_KINDS}
        public = PublicKeys(
            address=address,
            x25519_public=_x25519_public(secret["x25519"]),
            curve_public=_curve_public(secret["curve"]),
            bls_public=_bls_public(secret["bls"]),
        )
        _write_new(public_path, public.to_json())
        identity = cls(home, public, passphrase, account_key)
        identity._secrets.update(secret)
        return identity

    def unlock_all(self) -> None:
        """Decrypt and check every secret now (e.g. before starting a long-running node)."""
        for kind in KEY_KINDS:
            self._secret(kind)

    # ------------------------------------------------------------- public halves

    @property
    def address(self) -> str:
        """Checksummed account address."""
        return self.public.address

    @property
    def x25519_public(self) -> bytes:
        """Raw 32-byte X25519 public key."""
        return self.public.x25519_public

    @property
    def curve_public(self) -> bytes:
        """Raw 32-byte CurveZMQ public key."""
        return self.public.curve_public

    @property
    def curve_public_z85(self) -> bytes:
        """Z85 CurveZMQ public key (``socket.curve_publickey``)."""
        return self.public.curve_public_z85

    @property
    def bls_public(self) -> bytes:
        """BLS12-381 public key in G1, EIP-2537 encoding (128 bytes)."""
        return self.public.bls_public

    # ------------------------------------------------------------- secrets

    @property
    def account(self) -> LocalAccount:
        """The secp256k1 account, for signing transactions."""
        return Account.from_key(self._secrets["account"])

    @property
    def x25519_private_key(self) -> Any:
        """The X25519 private key (``cryptography`` object) for unwrapping vault keys."""
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        return X25519PrivateKey.from_private_bytes(self._secret("x25519"))

    @property
    def curve_secret(self) -> bytes:
        """Raw 32-byte CurveZMQ secret key."""
        return self._secret("curve")

    @property
    def curve_secret_z85(self) -> bytes:
        """Z85 CurveZMQ secret key (``socket.curve_secretkey``)."""
        from zmq.utils import z85

        return z85.encode(self._secret("curve"))

    @property
    def bls_secret(self) -> int:
        """The BLS12-381 secret scalar."""
        from collab import bls

        return bls.secret_from_bytes(self._secret("bls"))

    # ------------------------------------------------------------- signatures

    def sign_message(self, message: str | bytes) -> SignedMessage:
        """EIP-191 personal-message signature (text, or raw bytes)."""
        signable = encode_defunct(text=message) if isinstance(message, str) else encode_defunct(primitive=message)
        return self.account.sign_message(signable)

    def sign_typed_data(
        self,
        domain: Mapping[str, Any] | None = None,
        types: Mapping[str, Any] | None = None,
        message: Mapping[str, Any] | None = None,
        *,
        full_message: Mapping[str, Any] | None = None,
    ) -> SignedMessage:
        """EIP-712 signature (domain/types/message, or one ``full_message``)."""
        return self.account.sign_typed_data(
            dict(domain) if domain is not None else None,
            dict(types) if types is not None else None,
            dict(message) if message is not None else None,
            full_message=dict(full_message) if full_message is not None else None,
        )

    def bls_sign(self, message: bytes) -> bytes:
        """BLS signature (G2Basic) over ``message``, EIP-2537 encoding (256 bytes)."""
        from collab import bls

        return bls.sign(self.bls_secret, message)

    def bls_proof_of_possession(self, chain_id: int, registry: str) -> bytes:
        """Proof of possession of the BLS key that ``IdentityRegistry`` checks at registration."""
        from collab import bls

        return bls.prove_possession(self.bls_secret, chain_id, registry, self.address)

    def registry_keys(self, chain_id: int, registry: str) -> RegistryKeys:
        """Everything ``IdentityRegistry.register``/``updateKeys`` needs for this identity (Sahara ID).

        The proof of possession binds the BLS key to this account, this chain
        and this registry, so it cannot be replayed for another key holder.
        """
        return RegistryKeys(
            curve_key=self.curve_public,
            x25519_key=self.x25519_public,
            bls_pubkey=self.bls_public,
            bls_pop=self.bls_proof_of_possession(chain_id, registry),
        )

    # ------------------------------------------------------------- internals

    def _secret(self, kind: str) -> bytes:
        with self._lock:
            if kind not in self._secrets:
                path = self.keys_dir(self.home) / f"{kind}.json"
                value = _decrypt(_read_keystore(path), self._passphrase, path)
                derived = _PUBLIC_OF[kind](value)
                if derived != getattr(self.public, _PUBLIC_FIELD[kind]):
                    raise BadInput(f"{path} does not match the public key in {PUBLIC_FILE}")
                self._secrets[kind] = value
            return self._secrets[kind]

    def __repr__(self) -> str:
        return f"Identity(home={str(self.home)!r}, address={self.address})"


# --------------------------------------------------------------------- key material


def _random_scalar() -> bytes:
    """32 random bytes that are a valid secp256k1 private key."""
    return _generate(lambda: secrets.token_bytes(32))


def _generate(make: Callable[[], bytes]) -> bytes:
    """Draw until the secret is storable in a v3 keystore, which only takes a nonzero
    secp256k1 scalar (a redraw happens with probability ~2**-128)."""
    while True:
        value = make()
        if 0 < int.from_bytes(value, "big") < SECPK1_N:
            return value


def _x25519_secret() -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.generate().private_bytes_raw()


def _x25519_public(secret: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def _curve_secret() -> bytes:
    import zmq
    from zmq.utils import z85

    return z85.decode(zmq.curve_keypair()[1])


def _curve_public(secret: bytes) -> bytes:
    import zmq
    from zmq.utils import z85

    return z85.decode(zmq.curve_public(z85.encode(secret)))


def _bls_secret_bytes() -> bytes:
    from collab import bls

    return bls.secret_to_bytes(bls.keygen())


def _bls_public(secret: bytes) -> bytes:
    from collab import bls

    return bls.sk_to_pk(bls.secret_from_bytes(secret))


def _account_address(secret: bytes) -> str:
    return Account.from_key(secret).address


_PUBLIC_OF: dict[str, Callable[[bytes], Any]] = {
    "account": _account_address,
    "x25519": _x25519_public,
    "curve": _curve_public,
    "bls": _bls_public,
}
_PUBLIC_FIELD = {"account": "address", "x25519": "x25519_public", "curve": "curve_public", "bls": "bls_public"}


# --------------------------------------------------------------------- keystore files


def _read_keystore(path: Path) -> dict[str, Any]:
    """Parse and structurally check one keystore (cheap: no key derivation)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"incomplete identity: {path} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"malformed keystore {path}: {_describe(exc)}") from None
    try:
        if not isinstance(data, dict) or data.get("version") != 3:
            raise ValueError("not a version 3 Web3 Secret Storage keystore")
        crypto = data["crypto"]
        if crypto["cipher"] != "aes-128-ctr" or crypto["kdf"] not in ("scrypt", "pbkdf2"):
            raise ValueError(f"unsupported cipher/kdf {crypto['cipher']}/{crypto['kdf']}")
        if len(bytes.fromhex(crypto["ciphertext"])) != 32 or len(bytes.fromhex(crypto["mac"])) != 32:
            raise ValueError("ciphertext and mac must be 32 bytes")
        bytes.fromhex(crypto["cipherparams"]["iv"])
        _check_kdf_cost(crypto["kdf"], crypto["kdfparams"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadInput(f"malformed keystore {path}: {_describe(exc)}") from None
    return data


def _check_kdf_cost(kdf: str, params: Any) -> None:
    """Bound the work a tampered keystore can demand before its MAC is even checked."""
    if not isinstance(params, dict):
        raise ValueError("kdfparams must be an object")
    if params.get("dklen") != 32:
        raise ValueError("kdfparams.dklen must be 32")
    if kdf == "scrypt":
        n, r, p = params["n"], params["r"], params["p"]
        if not all(isinstance(v, int) and v > 0 for v in (n, r, p)) or n > 2**20 or r > 16 or p > 16 or n & (n - 1):
            raise ValueError(f"unreasonable scrypt parameters n={n} r={r} p={p}")
    elif not isinstance(params.get("c"), int) or not 0 < params["c"] <= 10_000_000:
        raise ValueError("unreasonable pbkdf2 iteration count")


def _decrypt(keystore: dict[str, Any], passphrase: str, path: Path, *, first: bool = False) -> bytes:
    """Decrypt one keystore; map failures to Unauthorized (passphrase) or BadInput (file).

    A MAC mismatch on the first keystore means a wrong passphrase; on a later
    one the passphrase is already proven, so the file itself was altered.
    """
    try:
        return bytes(Account.decrypt(keystore, passphrase))
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            if first:
                raise Unauthorized(f"wrong passphrase for {path}") from None
            raise BadInput(f"keystore {path} is corrupted (its MAC does not verify)") from None
        raise BadInput(f"malformed keystore {path}: {_describe(exc)}") from None
    except (KeyError, TypeError, AttributeError, MemoryError, OverflowError) as exc:
        raise BadInput(f"malformed keystore {path}: {_describe(exc)}") from None


def _write_new(path: Path, data: Mapping[str, Any]) -> None:
    """Write a 0600 file atomically, failing if ``path`` exists (link is atomic and no-clobber)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise BadInput(f"{path} already exists; refusing to overwrite a key file") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _hex_bytes(value: Any, length: int) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected a hex string, got {type(value).__name__}")
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != length:
        raise ValueError(f"expected {length} bytes, got {len(raw)}")
    return raw


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc) or type(exc).__name__
