// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {BLS} from "solady/utils/ext/ithaca/BLS.sol";

/// @title BlsConsentHarness
/// @notice Benchmark harness: the check a claim carrying a BLS consent signature
/// (a training round's participants) would add to posting, measured on its own.
/// @dev Not part of collab's protocol. Verifies one aggregate G2Basic signature
/// over one message by N signers: the N public keys are aggregated with G1ADD,
/// the message is hashed with Solady's hash-to-G2 (the py-ecc DST) and one
/// two-pair pairing check decides, as in IdentityRegistry's proof-of-possession check.
contract BlsConsentHarness {
    /// @notice Negated G1 generator (EIP-2537 encoding), the second pairing's G1 point.
    bytes private constant _NEG_G1 =
        hex"0000000000000000000000000000000017f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
        hex"00000000000000000000000000000000114d1d6855d545a8aa7d76c8cf2e21f267816aef1db507c96655b9d5caac42364e6f38ba0ecb751bad54dcd6b939c2ca";

    /// @notice Number of consent checks that passed (written so a check is a real transaction).
    uint256 public verified;

    /// @notice A consent signature did not verify.
    error ConsentSignatureInvalid();

    /// @notice Emitted after a consent signature verified.
    /// @param signers Number of public keys aggregated.
    event ConsentVerified(uint256 signers);

    /// @notice Verify `signature` as the aggregate of every key's signature on `message`.
    /// @param pubkeys The signers' G1 public keys (EIP-2537, 128 bytes each).
    /// @param message The signed consent message.
    /// @param signature The aggregate G2 signature (EIP-2537, 256 bytes).
    function verifyConsent(BLS.G1Point[] calldata pubkeys, bytes calldata message, BLS.G2Point calldata signature)
        external
    {
        BLS.G1Point memory aggregate = pubkeys[0];
        for (uint256 i = 1; i < pubkeys.length; ++i) {
            aggregate = BLS.add(aggregate, pubkeys[i]);
        }
        BLS.G2Point memory hashed = BLS.hashToG2(message);
        bytes memory input = abi.encodePacked(abi.encode(aggregate), abi.encode(hashed), _NEG_G1, abi.encode(signature));
        (bool ok, bytes memory out) = BLS.BLS12_PAIRING_CHECK.staticcall(input);
        // INVARIANT: e(apk, H(m)) · e(-G1, sig) == 1, i.e. every signer signed m.
        if (!ok || out.length != 32 || abi.decode(out, (uint256)) != 1) revert ConsentSignatureInvalid();
        ++verified;
        emit ConsentVerified(pubkeys.length);
    }
}
