// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IOneStepVerifier
/// @notice Recomputes ONE output element of ONE program step from the input
/// elements it reads (docs/protocol.md §3.3, §5.3, §6). Stateless: the game
/// contract (`BisectionGame`) authenticates the step and its inputs, this
/// contract authenticates the input *elements* and says what the disputed
/// element must be.
/// @dev Division of labour with the caller (the game):
///  * the game checks the step descriptor against the claim's `programRoot`
///    (single-leaf proof), that every input id is `< N_in + stepIndex`, and that
///    each `tensorRoot(inputs[i].chunkRoot, inputs[i].header)` is the root of
///    tensor id `descriptor.inputs[i]` (input-bundle entry or earlier trace leaf);
///  * the game passes EXACTLY `descriptor.inputs.length` inputs (+1 for BUNDLE_GET):
///    the verifier cannot tell an omitted input from a step of the wrong arity,
///    and would rule such a call `NoValidValue`;
///  * the game compares the claimer's revealed output header with `outHeader`
///    (a valid header that differs loses for the claimer without calling here);
///  * this contract checks everything else a step must satisfy to be well formed
///    (input count and headers, params, `outHeader` validity and shape rule,
///    per-op bounds of §3.4), checks each input's chunk range against its
///    `chunkRoot`, and returns the correct value of element `elementIndex`.
/// The claimer wins iff `verdict == AnyValue`, or `verdict == Value` and its
/// revealed element equals `expected`; with `NoValidValue` the challenger wins.
interface IOneStepVerifier {
    /// @notice How the disputed element is to be judged.
    /// @dev `Value`: exactly `expected` is right. `AnyValue`: a WITNESS element
    /// (below numel): whatever the claimer revealed stands. `NoValidValue`: the
    /// step is ill formed or its ASSERT_KTH is false, so no revealed value is right.
    enum Verdict {
        Value,
        AnyValue,
        NoValidValue
    }

    /// @notice One input of the step, with the chunks the disputed element reads.
    /// @dev `chunks` are the consecutive 256-byte chunks `[firstChunk, firstChunk + n)`
    /// (for a BUNDLE input: consecutive 64-byte entries `nameHash ‖ tensorRoot`
    /// starting at entry `firstChunk`), and `proof` their range proof (§2.4)
    /// against `chunkRoot` at depth `D(numLeaves(header))`. The range must be
    /// exactly the leaves holding the elements the op reads for `elementIndex`
    /// (empty `chunks` and `proof` when it reads none, e.g. the inputs of BUNDLE);
    /// `IOneStepVerifier.inputRange` says which. For BUNDLE_GET the caller
    /// appends one extra input after the bundle: the selected entry's tensor
    /// (its `tensorRoot(chunkRoot, header)` is checked here against the entry).
    /// @param header The input tensor's 32-byte header (§2.1).
    /// @param chunkRoot Root of the input's chunk (or entry) tree.
    /// @param firstChunk Index of the first supplied leaf.
    /// @param chunks The supplied leaves' bytes, concatenated.
    /// @param proof Range proof of the supplied leaves against `chunkRoot`.
    struct InputTensor {
        bytes32 header;
        bytes32 chunkRoot;
        uint256 firstChunk;
        bytes chunks;
        bytes32[] proof;
    }

    /// @notice The supplied chunk range of an input is not the one the element reads.
    /// @param input Position of the input in `inputs`.
    /// @param firstChunk The leaf index the range must start at.
    /// @param count The number of leaves the range must hold.
    error InputRangeMismatch(uint256 input, uint256 firstChunk, uint256 count);

    /// @notice An input's chunks and range proof do not fold to its `chunkRoot`.
    /// @param input Position of the input in `inputs`.
    error InputProofMismatch(uint256 input);

    /// @notice The number of inputs supplied is not what the game must pass for this op.
    /// @param supplied Inputs supplied.
    /// @param expected Inputs the op's descriptor names (+1 for BUNDLE_GET).
    error InputCountMismatch(uint256 supplied, uint256 expected);

    /// @notice BUNDLE_GET's appended entry tensor is not the tensor the entry commits to.
    error EntryTensorMismatch();

    /// @notice The correct value of output element `elementIndex` of a step.
    /// @dev Numeric outputs (FIXED/RING): `expected = bytes32(uint256(int256(v)))`,
    /// the int64 word sign-extended to 32 bytes; an element at index `>= numel`
    /// (chunk padding) is 0. BUNDLE outputs: `expected` is the entry leaf
    /// `keccak(0x05 ‖ nameHash ‖ tensorRoot)` of entry `elementIndex`, and the
    /// padding leaf `keccak(0x05 ‖ 0^64)` past the last entry. `expected` is 0
    /// whenever `verdict != Value`. An ill-formed step returns `NoValidValue`
    /// (never reverts); reverts are reserved for a malformed *proof* (bad input
    /// count, wrong chunk range, chunks that do not fold to `chunkRoot`), which is
    /// the prover's fault and can be resubmitted.
    /// @param op The op id (§3.3, 1..32).
    /// @param params The descriptor's `params` (abi-encoded op parameters).
    /// @param outHeader The descriptor's output header.
    /// @param inputs The step's inputs in descriptor order (see `InputTensor`).
    /// @param elementIndex The disputed output element (entry for BUNDLE outputs).
    /// @return verdict How to judge the claimer's revealed value.
    /// @return expected The correct 32-byte element encoding when `verdict == Value`.
    function evaluate(
        uint16 op,
        bytes calldata params,
        bytes32 outHeader,
        InputTensor[] calldata inputs,
        uint256 elementIndex
    ) external view returns (Verdict verdict, bytes32 expected);

    /// @notice Whether a step is well formed given its inputs' headers (§3.2, §3.4).
    /// @dev Does not know the step index or `N_in`: the caller checks input ids.
    /// For BUNDLE_GET, `inputHeaders` is the bundle's header only (the entry's
    /// header is `outHeader` by definition and checked in `evaluate`).
    /// @param op The op id.
    /// @param params The abi-encoded op parameters.
    /// @param outHeader The declared output header.
    /// @param inputHeaders The headers of the descriptor's inputs, in order.
    /// @return ok True iff the step is well formed.
    function checkStepWellFormed(uint16 op, bytes calldata params, bytes32 outHeader, bytes32[] calldata inputHeaders)
        external
        view
        returns (bool ok);

    /// @notice The elements of input `input` that output element `elementIndex` reads.
    /// @dev `[start, end)` flat element indices (entry indices for a bundle input);
    /// `start == end` when it reads none. Only meaningful for a well-formed step.
    /// For GATHER's table the range depends on the id value, so `idValue` must
    /// be the id element the output reads (ignored by every other op).
    /// @param op The op id.
    /// @param params The abi-encoded op parameters.
    /// @param outHeader The declared output header.
    /// @param inputHeaders The headers of the descriptor's inputs (+ the entry tensor's for BUNDLE_GET).
    /// @param elementIndex The output element.
    /// @param input Position of the input.
    /// @param idValue GATHER only: the id the element reads.
    /// @return start First element read.
    /// @return end One past the last element read.
    function inputRange(
        uint16 op,
        bytes calldata params,
        bytes32 outHeader,
        bytes32[] calldata inputHeaders,
        uint256 elementIndex,
        uint256 input,
        int256 idValue
    ) external view returns (uint256 start, uint256 end);
}
