"""Connect to a chain and talk to collab's contracts with typed results and errors.

Transactions are signed locally with the caller's ``LocalAccount`` (keys never
leave the process; any JSON-RPC endpoint works, not only anvil's unlocked dev
accounts). Reverts are decoded against the custom errors of every compiled
ABI, because an error often comes from a contract further down the call
chain than the one called; events are decoded the same way.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import Timeout as RequestsTimeout
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError, ProviderConnectionError, TimeExhausted, Web3RPCError

from chain.compiler import Artifact, compile_contracts
from chain.deployment import Deployment
from chain.errors import ContractRevert, make_revert
from collab.errors import BadInput, ChainUnavailable, InternalError, Unauthorized

RECEIPT_TIMEOUT_S = 120
# Estimates run against the latest block, but the transaction is mined in the next one:
# with timestamp clocks (ERC20Votes checkpoints, reputation decay) a new second can turn
# an in-place update into fresh storage slots (~22k gas each). Unused gas is refunded.
GAS_MARGIN = 1.25
GAS_HEADROOM = 80_000
NONCE_ATTEMPTS = 5  # sends with a fresh nonce when another process of the same account took it
_PANIC_REASONS = {
    0x01: "assertion failed", 0x11: "arithmetic overflow or underflow", 0x12: "division or modulo by zero",
    0x21: "invalid enum value", 0x22: "bad storage byte array", 0x31: "pop on empty array",
    0x32: "array index out of bounds", 0x41: "out of memory", 0x51: "call to an uninitialised function",
}


def connect(rpc_url: str, timeout: float = 30.0) -> Web3:
    """A Web3 on ``rpc_url`` that has answered once; ChainUnavailable otherwise."""
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None))
    try:
        w3.eth.chain_id  # noqa: B018 - the probe itself
    except (RequestsConnectionError, RequestsTimeout, ProviderConnectionError, OSError) as exc:
        raise ChainUnavailable(rpc_url, type(exc).__name__) from None
    except (Web3RPCError, ValueError) as exc:
        raise ChainUnavailable(rpc_url, f"not a JSON-RPC endpoint ({exc})") from None
    return w3


@contextlib.contextmanager
def rpc_guard(w3: Web3) -> Iterator[None]:
    """Turn a dropped connection mid-call into ChainUnavailable."""
    try:
        yield
    except (RequestsConnectionError, RequestsTimeout, ProviderConnectionError) as exc:
        raise ChainUnavailable(_endpoint(w3), type(exc).__name__) from None


def _endpoint(w3: Web3) -> str:
    return str(getattr(w3.provider, "endpoint_uri", "") or "the configured RPC URL")


# --------------------------------------------------------------------- plain values


def plain(value: Any, abi_type: str = "", components: Sequence[Mapping[str, Any]] | None = None) -> Any:
    """Convert a decoded ABI value into plain JSON-able Python.

    Addresses become checksummed strings, ``bytes``/``bytesN`` 0x-hex strings,
    tuples (structs) dicts by component name, arrays lists.
    """
    if abi_type.endswith("]"):
        inner = abi_type[: abi_type.rindex("[")]
        return [plain(v, inner, components) for v in value]
    if abi_type == "tuple" and components is not None:
        return {c["name"] or str(i): plain(v, c["type"], c.get("components")) for i, (c, v) in enumerate(zip(components, value, strict=True))}
    if abi_type == "address" and isinstance(value, str):
        return to_checksum_address(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _type_string(param: Mapping[str, Any]) -> str:
    """ABI param -> canonical type string, expanding tuples recursively."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_type_string(c) for c in param["components"])
        return f"({inner}){kind[len('tuple'):]}"
    return kind


def _signature(item: Mapping[str, Any]) -> str:
    return f"{item['name']}({','.join(_type_string(p) for p in item.get('inputs', []))})"


def _decode_params(params: Sequence[Mapping[str, Any]], data: bytes) -> dict[str, Any]:
    values = abi_decode([_type_string(p) for p in params], data)
    return {p["name"] or f"arg{i}": plain(v, p["type"], p.get("components")) for i, (p, v) in enumerate(zip(params, values, strict=True))}


# --------------------------------------------------------------------- ABI registry


@dataclass(frozen=True)
class Event:
    """A decoded log: event name, arguments as plain Python, emitting contract."""

    name: str
    args: dict[str, Any]
    address: str = ""
    log_index: int = 0


@dataclass(frozen=True)
class TxResult:
    """What a mined transaction produced."""

    tx_hash: str
    gas_used: int
    block_number: int
    events: list[Event] = field(default_factory=list)

    def events_named(self, name: str) -> list[Event]:
        """The events called ``name``, in log order."""
        return [e for e in self.events if e.name == name]


class AbiRegistry:
    """Every custom error and event of a set of ABIs, indexed by selector/topic."""

    def __init__(self, abis: Iterable[list[dict[str, Any]]]) -> None:
        self.errors: dict[bytes, dict[str, Any]] = {}
        self.events: dict[bytes, list[dict[str, Any]]] = {}
        for abi in abis:
            self.add(abi)

    @classmethod
    def from_artifacts(cls, artifacts: Iterable[Artifact]) -> AbiRegistry:
        """Registry over compiled artifacts."""
        return cls(a.abi for a in artifacts)

    def add(self, abi: list[dict[str, Any]]) -> None:
        """Index one more ABI (idempotent)."""
        for item in abi:
            if item.get("type") == "error":
                self.errors.setdefault(keccak(text=_signature(item))[:4], item)
            elif item.get("type") == "event" and not item.get("anonymous"):
                candidates = self.events.setdefault(keccak(text=_signature(item)), [])
                if item not in candidates:
                    candidates.append(item)

    def decode_revert(self, data: str | bytes | None, *, contract: str = "") -> ContractRevert:
        """Revert data -> the named ContractRevert (``UnknownRevert`` if no ABI knows it)."""
        raw = _to_bytes(data)
        hexdata = "0x" + raw.hex()
        if len(raw) < 4:
            return make_revert("UnknownRevert", {"data": hexdata} if raw else {}, data=hexdata, contract=contract)
        selector, body = raw[:4], raw[4:]
        try:
            if selector == keccak(text="Error(string)")[:4]:
                (reason,) = abi_decode(["string"], body)
                return make_revert("Error", {"reason": reason}, data=hexdata, contract=contract)
            if selector == keccak(text="Panic(uint256)")[:4]:
                (code,) = abi_decode(["uint256"], body)
                return make_revert("Panic", {"code": code, "reason": _PANIC_REASONS.get(code, "unknown panic")}, data=hexdata, contract=contract)
            item = self.errors.get(selector)
            if item is not None:
                return make_revert(item["name"], _decode_params(item.get("inputs", []), body), data=hexdata, contract=contract)
        except DecodingError:
            pass
        return make_revert("UnknownRevert", {"data": hexdata}, data=hexdata, contract=contract)

    def decode_log(self, log: Mapping[str, Any]) -> Event | None:
        """Decode one receipt log, or None when no known event matches it."""
        topics = [_to_bytes(t) for t in log.get("topics", [])]
        if not topics:
            return None
        for item in self.events.get(topics[0], []):
            inputs = item.get("inputs", [])
            indexed = [p for p in inputs if p.get("indexed")]
            if len(indexed) != len(topics) - 1:
                continue
            try:
                args = self._decode_event_args(inputs, indexed, topics[1:], _to_bytes(log.get("data", b"")))
            except DecodingError:
                continue
            return Event(item["name"], args, to_checksum_address(log["address"]), int(log.get("logIndex", 0)))
        return None

    def decode_logs(self, logs: Iterable[Mapping[str, Any]]) -> list[Event]:
        """Decode every known log in order; unknown logs are skipped."""
        return [e for e in (self.decode_log(log) for log in logs) if e is not None]

    @staticmethod
    def _decode_event_args(
        inputs: list[dict[str, Any]], indexed: list[dict[str, Any]], topics: list[bytes], data: bytes
    ) -> dict[str, Any]:
        by_name: dict[str, Any] = {}
        for param, topic in zip(indexed, topics, strict=True):
            kind = _type_string(param)
            dynamic = kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("(")
            # Indexed dynamic values are stored as their keccak hash only.
            by_name[param["name"]] = "0x" + topic.hex() if dynamic else plain(abi_decode([kind], topic)[0], param["type"], param.get("components"))
        by_name.update(_decode_params([p for p in inputs if not p.get("indexed")], data))
        return {p["name"]: by_name[p["name"]] for p in inputs if p["name"] in by_name}


def _to_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):  # some nodes wrap revert data
        return _to_bytes(value.get("data"))
    text = str(value)
    text = text[2:] if text.startswith("0x") else text
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


@functools.lru_cache(maxsize=1)
def _default_artifacts_cached() -> dict[str, Artifact]:
    return compile_contracts()


def default_artifacts() -> dict[str, Artifact]:
    """The project's compiled contracts (cached on disk and per process)."""
    return _default_artifacts_cached()


@functools.lru_cache(maxsize=1)
def default_registry() -> AbiRegistry:
    """Errors and events of every compiled project contract (and its libraries)."""
    return AbiRegistry.from_artifacts(default_artifacts().values())


def reset_caches() -> None:
    """Forget per-process artifacts (after sources change within one process)."""
    _default_artifacts_cached.cache_clear()
    default_registry.cache_clear()


# --------------------------------------------------------------------- transactions


def send_transaction(
    w3: Web3, account: LocalAccount, tx: dict[str, Any], registry: AbiRegistry, *, contract: str = ""
) -> TxResult:
    """Estimate, sign locally, send and wait; reverts come back as named errors.

    ``tx`` holds ``to``/``data``/``value`` (no ``to`` for a deployment).
    """
    with rpc_guard(w3), _account_lock(account.address):
        base: dict[str, Any] = {"from": account.address, "value": int(tx.get("value", 0)), "data": tx.get("data", "0x")}
        if tx.get("to"):
            base["to"] = to_checksum_address(tx["to"])
        try:
            gas = w3.eth.estimate_gas(base)  # type: ignore[arg-type]
        except ContractLogicError as exc:
            raise registry.decode_revert(exc.data, contract=contract) from None
        except Web3RPCError as exc:
            raise _rpc_failure(exc) from None
        for attempt in range(NONCE_ATTEMPTS):
            block = w3.eth.get_block("latest")
            full = {
                **base,
                "gas": min(int(gas * GAS_MARGIN) + GAS_HEADROOM, int(block["gasLimit"])),
                "nonce": w3.eth.get_transaction_count(account.address, "pending"),
                "chainId": w3.eth.chain_id,
                **_fees(w3, block),
            }
            signed = account.sign_transaction(full)
            try:
                tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
                break
            except Web3RPCError as exc:
                # Another process sending from this account (a node and a CLI command of one identity) took
                # the nonce first: ours was not accepted, so sending again with a fresh nonce is safe.
                if attempt + 1 == NONCE_ATTEMPTS or not _nonce_taken(exc):
                    raise _rpc_failure(exc) from None
                time.sleep(0.05 * (attempt + 1))
        try:
            receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S)
        except Web3RPCError as exc:
            raise _rpc_failure(exc) from None
        except TimeExhausted:
            raise ChainUnavailable(_endpoint(w3), f"transaction not mined within {RECEIPT_TIMEOUT_S}s") from None
        if receipt["status"] != 1:
            if int(receipt["gasUsed"]) >= int(full["gas"]):
                raise make_revert("OutOfGas", {"gas_used": int(receipt["gasUsed"]), "gas_limit": int(full["gas"])}, contract=contract)
            raise _replay_revert(w3, base, int(receipt["blockNumber"]), registry, contract)
        return TxResult(
            tx_hash="0x" + bytes(tx_hash).hex(),
            gas_used=int(receipt["gasUsed"]),
            block_number=int(receipt["blockNumber"]),
            events=registry.decode_logs(receipt["logs"]),
        )


def _fees(w3: Web3, block: Mapping[str, Any]) -> dict[str, int]:
    """EIP-1559 fees with headroom for two base-fee rises; a legacy gas price on pre-London chains."""
    if "baseFeePerGas" not in block:
        return {"gasPrice": int(w3.eth.gas_price)}
    priority = int(w3.eth.max_priority_fee)
    return {"maxPriorityFeePerGas": priority, "maxFeePerGas": int(block["baseFeePerGas"]) * 2 + priority}


_ACCOUNT_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _account_lock(address: str) -> threading.Lock:
    """One lock per sending account: threads of one process must not race for a nonce."""
    with _LOCKS_GUARD:
        return _ACCOUNT_LOCKS.setdefault(address, threading.Lock())


def _replay_revert(w3: Web3, call: dict[str, Any], block: int, registry: AbiRegistry, contract: str) -> ContractRevert:
    """A transaction reverted after a successful estimate: replay it to learn why."""
    try:
        w3.eth.call(call, block_identifier=max(block - 1, 0))  # type: ignore[arg-type]
    except ContractLogicError as exc:
        return registry.decode_revert(exc.data, contract=contract)
    except Web3RPCError:
        pass
    return registry.decode_revert(None, contract=contract)


def _rpc_message(exc: Web3RPCError) -> str:
    """The node's own error message (the JSON-RPC error's ``message``), else the exception's text."""
    message = exc.rpc_response.get("error", {}).get("message") if isinstance(exc.rpc_response, dict) else None
    return str(message or exc)


def _nonce_taken(exc: Web3RPCError) -> bool:
    """Did the node refuse a transaction because its nonce is already used or pending?"""
    text = _rpc_message(exc).lower()
    # Not "already known": that is this very transaction in the pool, which a re-send would duplicate.
    return any(m in text for m in ("nonce too low", "replacement transaction underpriced"))


def _rpc_failure(exc: Web3RPCError) -> BadInput:
    """Node-level rejections (insufficient funds, nonce) as one-line BadInput."""
    return BadInput(f"transaction rejected by the node: {_rpc_message(exc)}")


def deploy_contract(
    w3: Web3, account: LocalAccount, artifact: Artifact, *args: Any, value: int = 0, registry: AbiRegistry | None = None
) -> tuple[str, TxResult]:
    """Deploy ``artifact`` with constructor ``args``; returns (address, result)."""
    if not artifact.deployable:
        raise InternalError(f"{artifact.name} has no bytecode (interface or abstract contract)")
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    data = factory.constructor(*args).data_in_transaction
    result = send_transaction(w3, account, {"data": data, "value": value}, registry or AbiRegistry([artifact.abi]), contract=artifact.name)
    with rpc_guard(w3):
        receipt = w3.eth.get_transaction_receipt(result.tx_hash)  # type: ignore[arg-type]
    address = receipt["contractAddress"]
    if not address:
        raise InternalError(f"deploying {artifact.name} produced no contract address")
    return to_checksum_address(address), result


# --------------------------------------------------------------------- base client

C = TypeVar("C", bound="ContractClient")


class ContractClient:
    """Base of the typed per-contract clients in ``chain/clients/``.

    Subclasses set ``CONTRACT`` (the deployment/artifact name) and wrap
    :meth:`_call` and :meth:`_transact` in methods with real signatures.
    ``_call`` returns web3's decoded values (``plain()`` converts them).
    """

    CONTRACT: str = ""

    def __init__(
        self,
        w3: Web3,
        address: str,
        abi: list[dict[str, Any]],
        account: LocalAccount | None = None,
        *,
        registry: AbiRegistry | None = None,
        name: str | None = None,
    ) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.abi = abi
        self.account = account
        self.name = name or self.CONTRACT or "contract"
        self.contract = w3.eth.contract(address=self.address, abi=abi)
        self._registry = registry

    @classmethod
    def from_deployment(cls: type[C], deployment: Deployment, w3: Web3, account: LocalAccount | None = None) -> C:
        """The client for ``cls.CONTRACT`` as recorded in ``deployment`` (ABI hash checked)."""
        if not cls.CONTRACT:
            raise InternalError(f"{cls.__name__} does not set CONTRACT")
        artifact_name = deployment.artifact_name(cls.CONTRACT)
        artifact = default_artifacts().get(artifact_name)
        if artifact is None:
            raise InternalError(f"no compiled artifact named {artifact_name!r}")
        deployment.check_abi(cls.CONTRACT, artifact.abi_hash)
        return cls(w3, deployment.address(cls.CONTRACT), artifact.abi, account, name=cls.CONTRACT)

    @property
    def registry(self) -> AbiRegistry:
        """Decoder for errors/events: all project ABIs plus this contract's own."""
        if self._registry is None:
            registry = default_registry()
            registry.add(self.abi)
            self._registry = registry
        return self._registry

    def with_account(self: C, account: LocalAccount) -> C:
        """The same client acting as ``account``."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.account = account
        return clone

    def _call(self, fn_name: str, *args: Any, block: int | str = "latest") -> Any:
        """Read-only call; a revert raises the decoded ContractRevert."""
        sender = {"from": self.account.address} if self.account is not None else {}
        with rpc_guard(self.w3):
            try:
                return self.contract.functions[fn_name](*args).call(sender, block_identifier=block)  # type: ignore[arg-type]
            except ContractLogicError as exc:
                raise self.registry.decode_revert(exc.data, contract=self.name) from None

    def _events(
        self, name: str | None = None, *, from_block: int = 0, to_block: int | str = "latest", topics: Sequence[Any] | None = None
    ) -> list[Event]:
        """This contract's decoded events in a block range (all, or those called ``name``).

        ``topics`` are extra indexed-argument filters after the signature
        (``None`` = any), as 0x-hex 32-byte words. For watchers and history views.
        """
        query: dict[str, Any] = {"address": self.address, "fromBlock": int(from_block), "toBlock": to_block}
        if name is not None:
            items = [i for i in self.abi if i.get("type") == "event" and i.get("name") == name]
            if not items:
                raise InternalError(f"{self.name} has no event named {name!r}")
            query["topics"] = [["0x" + keccak(text=_signature(i)).hex() for i in items], *(topics or [])]
        with rpc_guard(self.w3):
            logs = self.w3.eth.get_logs(query)  # type: ignore[arg-type]
        events = self.registry.decode_logs(logs)
        return [e for e in events if name is None or e.name == name]

    def _transact(self, fn_name: str, *args: Any, value: int = 0) -> TxResult:
        """Send a transaction from ``self.account``; returns the mined result with decoded events."""
        if self.account is None:
            raise Unauthorized(f"{self.name}.{fn_name} needs a signing account", hint="unlock an identity (COLLAB_PASSPHRASE)")
        data = self.contract.encode_abi(fn_name, args=list(args))
        return send_transaction(self.w3, self.account, {"to": self.address, "data": data, "value": value}, self.registry, contract=self.name)
