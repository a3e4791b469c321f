"""``collab infer ASSET --mode plain --claim``: the owner's VM run is posted, re-executed and defended.

Real anvil and contracts, the tiny BERT of ``test_infer`` registered as an
asset, the owner's blob server over HTTP whose URL is published on chain
(``DataAvailability.publishSource``) so the verifier's watcher finds the data
through the claim's ``daPointer`` alone (no ``--source``). An honest claim is
agreed with; a claim with one flipped value is challenged and lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from chain.clients.claim_manager import ClaimManagerClient, ClaimStatus
from chain.clients.data_availability import DataAvailabilityClient, source_pointer
from chain.clients.licensing import LicenseKind
from chain.errors import revert_class
from collab.errors import EXIT_USAGE, BadInput
from collab.fraudproof.blobserver import BlobServer
from collab.fraudproof.inference import encoder_jobs, post_inference_claims
from collab.fraudproof.program import Op
from collab.fraudproof.store import Store
from collab.fraudproof.vm import Value
from collab.fraudproof.watcher import Watcher
from test_infer import TEXT, Env, _actor, _register_identity, env  # noqa: F401 - fixture


@dataclass
class Owner:
    """The owner's CLI home (its own identity, serving the asset) and its blob server."""

    home: Path
    account: LocalAccount
    server: BlobServer


@pytest.fixture
def owner(env: Env, chain_snapshot: str, tmp_path: Path) -> Iterator[Owner]:
    from collab.identity import Identity

    home = tmp_path / "owner"
    account = Identity.create(home, "pw", scrypt_n=2**4).account
    (home / "config.toml").write_text((env.owner_home / "config.toml").read_text())
    env.w3.provider.make_request("anvil_setBalance", [account.address, hex(10**22)])  # type: ignore[arg-type]
    _register_identity(env.w3, env.deployment, account, "infer-claim-owner")
    manager = ClaimManagerClient.from_deployment(env.deployment, env.w3, env.owner)
    server = BlobServer(Store(home), int(env.w3.eth.chain_id), manager.is_audience).start()
    try:
        yield Owner(home, account, server)
    finally:
        server.stop()


def _verifier(env: Env, label: str) -> LocalAccount:
    """An account the asset's owner names as verifier (the claim's audience: licensed verifiers)."""
    account = _actor(env.w3, label)
    ClaimManagerClient.from_deployment(env.deployment, env.w3, env.owner).set_verifier(env.encoder_asset, account.address, True)
    return account


def _cli(env: Env, owner: Owner, tmp_path: Path, *extra: str) -> int:
    from collab.cli import run
    from collab.identity import Identity

    client_home = tmp_path / "client"
    client = Identity.create(client_home, "pw", scrypt_n=2**4).account
    env.w3.provider.make_request("anvil_setBalance", [client.address, hex(10**22)])  # type: ignore[arg-type]
    _register_identity(env.w3, env.deployment, client, "infer-claim-client")
    env.buy(client, LicenseKind.LONG_TERM)
    dep = tmp_path / "deployment.json"
    env.deployment.save(dep)
    args = ["--json", "--home", str(client_home), "--deployment", str(dep), "infer", str(env.encoder_asset),
            "--mode", "plain", "--owner-home", str(owner.home), "--text", TEXT, "--seq-len", "8", *extra]
    return run(args)


@pytest.mark.slow
def test_a_claimed_plain_inference_is_re_executed_and_agreed_with(
    env: Env, owner: Owner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    monkeypatch.setenv("COLLAB_OWNER_PASSPHRASE", "pw")
    capsys.readouterr()
    assert _cli(env, owner, tmp_path, "--claim", "--da-url", owner.server.url) == 0
    out = json.loads(capsys.readouterr().out)
    (c,) = out["claims"]
    # The claimed fixed-point embedding is what was served, up to the VM's rounding.
    assert c["max_abs_vs_served"] < 1e-3 and len(c["embedding"]) == 16
    assert c["da_pointer"] == "0x" + source_pointer(owner.server.url).hex()
    claim_id = bytes.fromhex(c["claim_id"][2:])
    manager = ClaimManagerClient.from_deployment(env.deployment, env.w3, env.owner)
    assert manager.get_claim(claim_id).claimer == owner.account.address
    data = DataAvailabilityClient.from_deployment(env.deployment, env.w3, env.owner)
    assert data.source_of(bytes.fromhex(c["da_pointer"][2:])) == owner.server.url
    # A named verifier re-executes from the URL the daPointer resolves to (no --source) and agrees.
    watcher = Watcher(env.w3, env.deployment, _verifier(env, "infer-verifier"), tmp_path / "verifier")
    try:
        assert watcher.sources_for(claim_id) == [owner.server.url]
        events = watcher.poll()
        assert watcher.verdicts()[claim_id][0] == "agree", events
        assert not watcher.games()
    finally:
        watcher.close()
    # Not in the audience: a stranger's watcher skips the claim.
    stranger = Watcher(env.w3, env.deployment, env.stranger, tmp_path / "stranger")
    try:
        stranger.poll()
        assert stranger.verdicts()[claim_id][0] == "not-audience"
    finally:
        stranger.close()


@pytest.mark.slow
def test_a_wrong_claimed_inference_loses_to_a_verifier(env: Env, owner: Owner, tmp_path: Path) -> None:
    (job,) = encoder_jobs(env.model, [TEXT], 8)
    step = next(i for i, s in enumerate(job.program.steps) if s.op == Op.SOFTMAX)
    honest = job.trace().outputs[step].value
    flat = honest.flat().copy()
    flat[3] += 1 << 14  # large enough to change the pooled output
    wrong = {step: Value(honest.header, flat.reshape(honest.header.shape))}
    (c,) = post_inference_claims(env.w3, env.deployment, owner.account, owner.home, env.encoder_asset,
                                 env.buyers[0].address, [job], da_url=owner.server.url, overrides=[wrong])
    claim_id = bytes.fromhex(c.claim_id[2:])
    assert c.output_root != "0x" + job.trace().output_root.hex()
    verifier = Watcher(env.w3, env.deployment, _verifier(env, "infer-challenger"), tmp_path / "challenger")
    defender = Watcher(env.w3, env.deployment, owner.account, owner.home)  # the owner's `collab watch`
    try:
        log: list[str] = []
        for _ in range(300):
            log += verifier.poll() + defender.poll()
            if verifier.games() and not verifier.games("open"):
                break
        (game,) = verifier.games()
        assert game.status == "won" and f"step {step} (SOFTMAX)" in game.detail, log[-5:]
        assert defender.games()[0].status == "lost"
    finally:
        verifier.close()
        defender.close()
    manager = ClaimManagerClient.from_deployment(env.deployment, env.w3, env.owner)
    assert manager.claim_status(claim_id) == ClaimStatus.REJECTED


def test_claim_flag_misuse_and_bad_urls_are_clear_errors(
    env: Env, owner: Owner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    monkeypatch.setenv("COLLAB_OWNER_PASSPHRASE", "pw")
    from collab.cli import run

    dep = tmp_path / "deployment.json"
    env.deployment.save(dep)
    base = ["--home", str(tmp_path / "c"), "--deployment", str(dep), "infer", str(env.encoder_asset), "--text", TEXT]
    assert run(base + ["--mode", "mpc", "--claim"]) == EXIT_USAGE
    assert run(base + ["--mode", "plain", "--da-url", owner.server.url]) == EXIT_USAGE
    data = DataAvailabilityClient.from_deployment(env.deployment, env.w3, owner.account)
    for bad in ("ftp://example", "http://", "https://" + "x" * 300):
        with pytest.raises(BadInput):
            data.publish_source(bad)
    assert data.source_of(source_pointer("http://127.0.0.1:1")) is None
    assert data.source_of(bytes(32)) is None
    with pytest.raises(revert_class("InvalidSource")):
        data._transact("publishSource", "ftp://example")  # the contract checks too
    pointer = data.publish_source("http://127.0.0.1:1")
    assert data.publish_source("http://127.0.0.1:1") == pointer  # idempotent: one event
    published = data._events("SourcePublished", topics=["0x" + pointer.hex()])
    assert [e.args["url"] for e in published] == ["http://127.0.0.1:1"] and data.source_of(pointer) == "http://127.0.0.1:1"
