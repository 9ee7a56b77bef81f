// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title The derivd collateral bridge's EVM end
/// @notice Holds the bridged ERC-20 (6 decimals, 1 unit = 1 derivd quote unit). `deposit` locks
/// tokens for a derivd address; a withdrawal signed by validators holding > 2/3 of the current
/// validator set's power is requested, then finalized (paid) after `disputePeriod` seconds. The
/// contract knows the validator set only by its hash; the current set moves it to the next one
/// (`updateValset`), pauses it with > 1/3 of the power and unpauses it with > 2/3.
/// @dev The digests are those of derivd's `execution/bridge/evm.py`, bit for bit: keccak256 of ABI
/// words, no EIP-191 prefix, each bound to (block.chainid, this contract, keccak256(derivd chain id)).
contract DerivdBridge {
    using SafeERC20 for IERC20;

    struct Valset {
        address[] validators; // strictly ascending, non-zero
        uint256[] powers; // powers[i] > 0 is validators[i]'s
        uint256 nonce;
    }

    /// @dev sigs[i] is validators[i]'s signature; v == 0 marks it absent.
    struct Sig {
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @dev Two storage slots (the public view `withdrawals` returns the ABI's field order).
    struct Withdrawal {
        address recipient; // non-zero once requested
        uint64 requestedAt;
        bool finalized;
        uint256 amount;
    }

    bytes32 private constant WITHDRAWAL_DOMAIN = keccak256("derivd.bridge.withdrawal.v1");
    bytes32 private constant VALSET_DOMAIN = keccak256("derivd.bridge.valset.v1");
    bytes32 private constant PAUSE_DOMAIN = keccak256("derivd.bridge.pause.v1");
    bytes32 private constant UNPAUSE_DOMAIN = keccak256("derivd.bridge.unpause.v1");
    /// @dev secp256k1's order / 2: a signature with a larger s is refused (one signature per signer).
    uint256 private constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    IERC20 public immutable token;
    bytes32 public immutable derivdChain;
    uint256 public immutable disputePeriod;
    uint256 public immutable minDeposit;

    bytes32 public valsetHash;
    uint256 public valsetNonce;
    bool public paused;
    uint256 public pauseNonce;
    mapping(uint256 id => Withdrawal) private _withdrawals;

    event Deposit(address indexed depositor, address indexed recipient, uint256 amount);
    event WithdrawalRequested(uint256 indexed id, address indexed recipient, uint256 amount);
    event WithdrawalFinalized(uint256 indexed id, address indexed recipient, uint256 amount);
    event ValsetUpdated(uint256 indexed nonce, bytes32 valsetHash, address[] validators, uint256[] powers);
    /// @dev Both carry the pause nonce the validators signed.
    event Paused(uint256 pauseNonce);
    event Unpaused(uint256 pauseNonce);

    error ZeroTokenAddress();
    error BridgePaused();
    error NotPaused();
    error AlreadyPaused();
    error ZeroRecipient();
    error DepositBelowMinimum(uint256 amount, uint256 minDeposit);
    /// @dev `current` does not hash to the stored valsetHash.
    error ValsetMismatch(bytes32 given, bytes32 stored);
    error SignatureCountMismatch(uint256 signatures, uint256 validators);
    /// @dev sigs[index] is present but is not validators[index]'s signature of the digest.
    error InvalidSignature(uint256 index);
    /// @dev The present signatures hold `signedPower` of `totalPower`: not above the threshold.
    error InsufficientPower(uint256 signedPower, uint256 totalPower);
    error StaleValsetNonce(uint256 nonce, uint256 storedNonce);
    error EmptyValset();
    error ValsetLengthMismatch(uint256 validators, uint256 powers);
    /// @dev validators[index] is zero or not above validators[index - 1].
    error ValidatorsNotAscending(uint256 index);
    error ZeroPower(uint256 index);
    error TotalPowerTooLarge();
    error WithdrawalAlreadyRequested(uint256 id);
    error UnknownWithdrawal(uint256 id);
    error WithdrawalAlreadyFinalized(uint256 id);
    error DisputePeriodNotOver(uint256 id, uint256 finalizableAt);

    constructor(
        address token_,
        bytes32 derivdChain_,
        Valset memory initial,
        uint256 disputePeriod_,
        uint256 minDeposit_
    ) {
        if (token_ == address(0)) revert ZeroTokenAddress();
        _checkValset(initial.validators, initial.powers);
        token = IERC20(token_);
        derivdChain = derivdChain_;
        disputePeriod = disputePeriod_;
        minDeposit = minDeposit_;
        bytes32 hash = _valsetHash(initial.validators, initial.powers, initial.nonce);
        valsetHash = hash;
        valsetNonce = initial.nonce;
        emit ValsetUpdated(initial.nonce, hash, initial.validators, initial.powers);
    }

    // ------------------------------------------------------------------ deposits

    /// @notice Locks `amount` token units (approved beforehand) for the derivd address `recipient`.
    function deposit(uint256 amount, address recipient) external {
        if (paused) revert BridgePaused();
        if (recipient == address(0)) revert ZeroRecipient();
        if (amount < minDeposit) revert DepositBelowMinimum(amount, minDeposit);
        token.safeTransferFrom(msg.sender, address(this), amount);
        emit Deposit(msg.sender, recipient, amount);
    }

    // ------------------------------------------------------------------ withdrawals

    /// @notice Records withdrawal `id` (signed by > 2/3 of the current set's power); it can be
    /// finalized `disputePeriod` seconds later. Anyone may relay it.
    function requestWithdrawal(
        uint256 id,
        address recipient,
        uint256 amount,
        Valset calldata current,
        Sig[] calldata sigs
    ) external {
        if (paused) revert BridgePaused();
        if (recipient == address(0)) revert ZeroRecipient();
        if (_withdrawals[id].recipient != address(0)) revert WithdrawalAlreadyRequested(id);
        bytes32 digest = keccak256(
            abi.encode(WITHDRAWAL_DOMAIN, block.chainid, address(this), derivdChain, id, recipient, amount)
        );
        _checkSignatures(current, sigs, digest, 2);
        _withdrawals[id] = Withdrawal({
            recipient: recipient,
            requestedAt: uint64(block.timestamp),
            finalized: false,
            amount: amount
        });
        emit WithdrawalRequested(id, recipient, amount);
    }

    /// @notice Pays requested withdrawal `id` once its dispute period is over. Anyone may call it.
    function finalizeWithdrawal(uint256 id) external {
        if (paused) revert BridgePaused();
        Withdrawal storage w = _withdrawals[id];
        address recipient = w.recipient;
        if (recipient == address(0)) revert UnknownWithdrawal(id);
        if (w.finalized) revert WithdrawalAlreadyFinalized(id);
        uint256 finalizableAt = uint256(w.requestedAt) + disputePeriod;
        if (block.timestamp < finalizableAt) revert DisputePeriodNotOver(id, finalizableAt);
        w.finalized = true;
        uint256 amount = w.amount;
        token.safeTransfer(recipient, amount);
        emit WithdrawalFinalized(id, recipient, amount);
    }

    /// @notice Withdrawal `id` as (recipient, amount, requestedAt, finalized); zeros if never requested.
    function withdrawals(
        uint256 id
    ) external view returns (address recipient, uint256 amount, uint64 requestedAt, bool finalized) {
        Withdrawal storage w = _withdrawals[id];
        return (w.recipient, w.amount, w.requestedAt, w.finalized);
    }

    // ------------------------------------------------------------------ validator set

    /// @notice Makes `newSet` the trusted set, signed by > 2/3 of the current set's power. Allowed
    /// while paused (the set that unpauses must be the live one).
    function updateValset(Valset calldata newSet, Valset calldata current, Sig[] calldata sigs) external {
        if (newSet.nonce <= valsetNonce) revert StaleValsetNonce(newSet.nonce, valsetNonce);
        _checkValset(newSet.validators, newSet.powers);
        bytes32 newHash = _valsetHash(newSet.validators, newSet.powers, newSet.nonce);
        bytes32 digest = keccak256(
            abi.encode(VALSET_DOMAIN, block.chainid, address(this), derivdChain, newHash)
        );
        _checkSignatures(current, sigs, digest, 2);
        valsetHash = newHash;
        valsetNonce = newSet.nonce;
        emit ValsetUpdated(newSet.nonce, newHash, newSet.validators, newSet.powers);
    }

    // ------------------------------------------------------------------ pause

    /// @notice Stops deposits, requests and finalizations: signed by > 1/3 of the power.
    function pause(Valset calldata current, Sig[] calldata sigs) external {
        if (paused) revert AlreadyPaused();
        uint256 nonce = pauseNonce;
        bytes32 digest = keccak256(abi.encode(PAUSE_DOMAIN, block.chainid, address(this), derivdChain, nonce));
        _checkSignatures(current, sigs, digest, 1);
        paused = true;
        emit Paused(nonce);
    }

    /// @notice Resumes the bridge: signed by > 2/3 of the power. Increments pauseNonce, so the
    /// pause signatures already given cannot pause it again.
    function unpause(Valset calldata current, Sig[] calldata sigs) external {
        if (!paused) revert NotPaused();
        uint256 nonce = pauseNonce;
        bytes32 digest = keccak256(abi.encode(UNPAUSE_DOMAIN, block.chainid, address(this), derivdChain, nonce));
        _checkSignatures(current, sigs, digest, 2);
        paused = false;
        pauseNonce = nonce + 1;
        emit Unpaused(nonce);
    }

    // ------------------------------------------------------------------ internals

    /// @dev Reverts unless `current` is the stored set, every present signature is its signer's
    /// (low s, v 27/28) and the signers hold more than `thirds`/3 of the power.
    function _checkSignatures(Valset calldata current, Sig[] calldata sigs, bytes32 digest, uint256 thirds)
        private
        view
    {
        bytes32 given = _valsetHash(current.validators, current.powers, current.nonce);
        if (given != valsetHash) revert ValsetMismatch(given, valsetHash);
        uint256 n = current.validators.length;
        if (sigs.length != n) revert SignatureCountMismatch(sigs.length, n);
        uint256 total;
        uint256 signed;
        for (uint256 i; i < n; ++i) {
            uint256 power = current.powers[i];
            total += power;
            Sig calldata sig = sigs[i];
            if (sig.v == 0) continue;
            if (
                (sig.v != 27 && sig.v != 28) || uint256(sig.s) > HALF_ORDER
                    || ecrecover(digest, sig.v, sig.r, sig.s) != current.validators[i]
            ) revert InvalidSignature(i);
            signed += power;
        }
        if (signed * 3 <= total * thirds) revert InsufficientPower(signed, total);
    }

    /// @dev A set the contract may trust: non-empty, equal lengths, addresses non-zero and strictly
    /// ascending, powers > 0, and a total power whose threshold arithmetic cannot overflow.
    function _checkValset(address[] memory validators, uint256[] memory powers) private pure {
        uint256 n = validators.length;
        if (n == 0) revert EmptyValset();
        if (powers.length != n) revert ValsetLengthMismatch(n, powers.length);
        address previous = address(0);
        uint256 total;
        for (uint256 i; i < n; ++i) {
            if (validators[i] <= previous) revert ValidatorsNotAscending(i);
            previous = validators[i];
            if (powers[i] == 0) revert ZeroPower(i);
            if (powers[i] > type(uint128).max) revert TotalPowerTooLarge();
            total += powers[i];
        }
        if (total > type(uint128).max) revert TotalPowerTooLarge();
    }

    /// @dev keccak256(nonce, keccak256(addresses as words), keccak256(powers as words)).
    function _valsetHash(address[] memory validators, uint256[] memory powers, uint256 nonce)
        private
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(nonce, keccak256(abi.encodePacked(validators)), keccak256(abi.encodePacked(powers))));
    }
}
