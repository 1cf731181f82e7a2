// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title StreamWeave's escrow of payment channels
/// @notice Holds viewers' deposits and settles the EIP-712 vouchers that
/// StreamWeave's ledger accepts off chain (spec: shared/spec/payments.md).
///
/// - A channel's id is keccak256(abi.encode(payer, payee, token, salt,
///   signer, escrow, chainId)), computed here, so an id can never be reused.
/// - A voucher {channelId, cumulativeAmount} signed by the channel's signer
///   lets the payee side take cumulativeAmount in total.
/// - Every settled amount is split by the channel's revenue policy, fixed
///   at open (its hash is stored; callers pass the policy): the fee rounded
///   up, each recipient's running total floor(rest * share / sumShares),
///   the leftover units held until the channel closes and then given one
///   each in list order. Each total is a function of the settled amount
///   alone, so any batching of settles credits the same units.
/// - Money leaves only by pull: credits are withdrawn by their owners, so
///   one recipient that cannot receive blocks nobody else.
/// - A channel settles until its deadline (its expiry, or the end of the
///   settle window once the payer asks to close); from then on anyone can
///   finalize it, which refunds the rest of the deposit to the payer.
contract StreamWeaveEscrow is EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// One recipient of a payee's revenue and its integer share.
    struct Recipient {
        address account;
        uint64 share;
    }

    /// A payee's revenue policy, bound to a channel when it opens.
    struct Policy {
        uint16 feeBps;
        address feeRecipient;
        Recipient[] recipients;
    }

    enum State {
        None,
        Open,
        Closing,
        Closed
    }

    struct Channel {
        address payer;
        uint64 expiresAt;
        State state;
        address payee;
        uint64 closesAt;
        address token;
        address signer;
        uint128 deposit;
        uint128 settled;
        bytes32 policyHash;
    }

    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)");
    uint16 public constant BPS_DENOMINATOR = 10_000;
    uint256 public constant MAX_RECIPIENTS = 16;

    /// How long a voucher can still be settled after the payer asks to close.
    uint64 public immutable settleWindow;

    mapping(bytes32 channelId => Channel) private _channels;
    /// What each account can withdraw, per token.
    mapping(address token => mapping(address account => uint256)) public credits;
    /// What the escrow owes in each token: deposits not yet refunded or
    /// withdrawn (open escrow + held leftover units + unpaid credits).
    mapping(address token => uint256) public owed;

    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        address token,
        bytes32 salt,
        address signer,
        uint128 deposit,
        uint64 expiresAt,
        bytes32 policyHash,
        Policy policy
    );
    event ToppedUp(bytes32 indexed channelId, uint128 amount, uint128 deposit);
    event Settled(bytes32 indexed channelId, uint128 cumulativeAmount, uint128 amount);
    event Credited(bytes32 indexed channelId, address indexed token, address indexed account, uint256 amount);
    event CloseRequested(bytes32 indexed channelId, uint64 closesAt);
    event Closed(bytes32 indexed channelId, uint128 settled, uint128 refund, uint256 leftover);
    event Refunded(bytes32 indexed channelId, address indexed payer, uint128 amount, bool paid);
    event Withdrawn(address indexed token, address indexed account, address to, uint256 amount);

    error ZeroAddress();
    error ZeroAmount();
    error InvalidPolicy();
    error PolicyMismatch();
    error ChannelExists(bytes32 channelId);
    error UnknownChannel(bytes32 channelId);
    error NotPayer();
    error NotPayee();
    error ChannelNotOpen(bytes32 channelId);
    error PastDeadline(bytes32 channelId);
    error BeforeDeadline(bytes32 channelId);
    error InvalidExpiry();
    error WrongSigner(address recovered);
    error ExceedsDeposit(uint128 cumulativeAmount, uint128 deposit);
    error DepositTooLarge();
    error LengthMismatch();

    constructor(uint64 settleWindow_) EIP712("StreamWeave", "1") {
        settleWindow = settleWindow_;
    }

    // ---------------------------------------------------------------- views

    /// The id a channel of these parameters has on this escrow and chain.
    function channelId(address payer, address payee, address token, bytes32 salt, address signer)
        public
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(payer, payee, token, salt, signer, address(this), block.chainid));
    }

    function channel(bytes32 id) external view returns (Channel memory) {
        return _channels[id];
    }

    /// The EIP-712 digest the channel's signer signs.
    function voucherDigest(bytes32 id, uint128 cumulativeAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, id, cumulativeAmount)));
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function policyHash(Policy calldata policy) public pure returns (bytes32) {
        return keccak256(abi.encode(policy));
    }

    /// The split of a settled amount: the fee, each recipient's total, and
    /// the units held until close (fewer than the number of recipients).
    function splitTotals(Policy calldata policy, uint256 gross)
        public
        pure
        returns (uint256 fee, uint256[] memory totals, uint256 leftover)
    {
        uint256 sum = _sumOfShares(policy);
        fee = _fee(policy.feeBps, gross);
        uint256 rest = gross - fee;
        uint256 n = policy.recipients.length;
        totals = new uint256[](n);
        uint256 given;
        for (uint256 i; i < n; ++i) {
            totals[i] = rest * policy.recipients[i].share / sum;
            given += totals[i];
        }
        leftover = rest - given;
    }

    /// The first moment the channel can no longer settle (and can finalize).
    function deadline(bytes32 id) public view returns (uint64) {
        Channel storage c = _channels[id];
        if (c.state == State.Closing) return c.closesAt;
        return c.expiresAt;
    }

    // ------------------------------------------------------------- payer side

    /// Opens a channel from msg.sender (the payer) to `payee`, escrowing
    /// `deposit` of `token` (counted as received, for fee-on-transfer tokens).
    function open(
        address payee,
        address token,
        uint128 deposit,
        bytes32 salt,
        address signer,
        uint64 expiresAt,
        Policy calldata policy
    ) external nonReentrant returns (bytes32 id) {
        if (payee == address(0) || signer == address(0) || token == address(0)) revert ZeroAddress();
        if (expiresAt <= block.timestamp) revert InvalidExpiry();
        _validate(policy);
        id = channelId(msg.sender, payee, token, salt, signer);
        Channel storage c = _channels[id];
        if (c.state != State.None) revert ChannelExists(id);
        c.payer = msg.sender;
        c.payee = payee;
        c.token = token;
        c.signer = signer;
        c.expiresAt = expiresAt;
        c.state = State.Open;
        bytes32 ph = policyHash(policy);
        c.policyHash = ph;
        uint128 received = _pull(token, deposit);
        c.deposit = received;
        emit ChannelOpened(id, msg.sender, payee, token, salt, signer, received, expiresAt, ph, policy);
    }

    /// Adds to an open channel's deposit (payer only).
    function topUp(bytes32 id, uint128 amount) external nonReentrant {
        Channel storage c = _existing(id);
        if (msg.sender != c.payer) revert NotPayer();
        if (c.state != State.Open) revert ChannelNotOpen(id);
        if (block.timestamp >= c.expiresAt) revert PastDeadline(id);
        uint128 received = _pull(c.token, amount);
        uint256 total = uint256(c.deposit) + received;
        if (total > type(uint128).max) revert DepositTooLarge();
        // forge-lint: disable-next-line(unsafe-typecast)
        c.deposit = uint128(total); // checked above
        // forge-lint: disable-next-line(unsafe-typecast)
        emit ToppedUp(id, received, uint128(total));
    }

    /// Starts the settle window (payer only): vouchers settle until it ends,
    /// then anyone can finalize.
    function requestClose(bytes32 id) external nonReentrant {
        Channel storage c = _existing(id);
        if (msg.sender != c.payer) revert NotPayer();
        if (c.state != State.Open) revert ChannelNotOpen(id);
        if (block.timestamp >= c.expiresAt) revert PastDeadline(id);
        uint64 closesAt = uint64(block.timestamp) + settleWindow;
        if (closesAt > c.expiresAt) closesAt = c.expiresAt; // the window never outlives the channel
        c.state = State.Closing;
        c.closesAt = closesAt;
        emit CloseRequested(id, closesAt);
    }

    // ------------------------------------------------------------ payee side

    /// Settles a voucher: anyone holding it can, for the payee side only. An
    /// amount at or below what is settled changes nothing (no revert).
    function settle(bytes32 id, uint128 cumulativeAmount, bytes calldata signature, Policy calldata policy)
        external
        nonReentrant
    {
        _settle(id, cumulativeAmount, signature, policy);
    }

    /// Several settles in one transaction; each follows settle's rules.
    function settleMany(
        bytes32[] calldata ids,
        uint128[] calldata cumulativeAmounts,
        bytes[] calldata signatures,
        Policy[] calldata policies
    ) external nonReentrant {
        uint256 n = ids.length;
        if (cumulativeAmounts.length != n || signatures.length != n || policies.length != n) {
            revert LengthMismatch();
        }
        for (uint256 i; i < n; ++i) {
            _settle(ids[i], cumulativeAmounts[i], signatures[i], policies[i]);
        }
    }

    /// The payee closes at once: settles a final voucher (if it is newer;
    /// pass 0 and no signature to settle nothing), gives the held units away
    /// and refunds the rest of the deposit to the payer.
    function close(bytes32 id, uint128 cumulativeAmount, bytes calldata signature, Policy calldata policy)
        external
        nonReentrant
    {
        Channel storage c = _existing(id);
        if (msg.sender != c.payee) revert NotPayee();
        if (c.state == State.Closed) revert ChannelNotOpen(id);
        if (block.timestamp >= deadline(id)) revert PastDeadline(id);
        if (policyHash(policy) != c.policyHash) revert PolicyMismatch();
        if (cumulativeAmount > c.settled) _settle(id, cumulativeAmount, signature, policy);
        _finish(id, c, policy);
    }

    /// Closes a channel whose deadline has passed (anyone): the held units
    /// go to the recipients and the rest of the deposit to the payer.
    function finalize(bytes32 id, Policy calldata policy) external nonReentrant {
        Channel storage c = _existing(id);
        if (c.state == State.Closed) revert ChannelNotOpen(id);
        if (block.timestamp < deadline(id)) revert BeforeDeadline(id);
        if (policyHash(policy) != c.policyHash) revert PolicyMismatch();
        _finish(id, c, policy);
    }

    /// Pays msg.sender's credits in `token` to `to`.
    function withdraw(address token, address to) external nonReentrant returns (uint256 amount) {
        if (to == address(0)) revert ZeroAddress();
        amount = credits[token][msg.sender];
        if (amount == 0) revert ZeroAmount();
        credits[token][msg.sender] = 0;
        owed[token] -= amount;
        emit Withdrawn(token, msg.sender, to, amount);
        IERC20(token).safeTransfer(to, amount);
    }

    // -------------------------------------------------------------- internals

    function _existing(bytes32 id) private view returns (Channel storage c) {
        c = _channels[id];
        if (c.state == State.None) revert UnknownChannel(id);
    }

    function _settle(bytes32 id, uint128 cumulativeAmount, bytes calldata signature, Policy calldata policy) private {
        Channel storage c = _existing(id);
        uint128 before = c.settled;
        if (cumulativeAmount <= before) return; // already settled: a no-op
        if (c.state == State.Closed) revert ChannelNotOpen(id);
        if (block.timestamp >= deadline(id)) revert PastDeadline(id);
        if (cumulativeAmount > c.deposit) revert ExceedsDeposit(cumulativeAmount, c.deposit);
        if (policyHash(policy) != c.policyHash) revert PolicyMismatch();
        address recovered = ECDSA.recoverCalldata(voucherDigest(id, cumulativeAmount), signature);
        if (recovered != c.signer) revert WrongSigner(recovered);

        c.settled = cumulativeAmount;
        emit Settled(id, cumulativeAmount, cumulativeAmount - before);

        _creditSplit(id, c.token, policy, before, cumulativeAmount);
    }

    /// Credits the difference of the split's totals between two settled
    /// amounts: the fee's and each recipient's (the leftover stays held).
    function _creditSplit(bytes32 id, address token, Policy calldata policy, uint256 before, uint256 next) private {
        uint256 feeBefore = _fee(policy.feeBps, before);
        uint256 feeNext = _fee(policy.feeBps, next);
        _credit(id, token, policy.feeRecipient, feeNext - feeBefore);
        uint256 sum = _sumOfShares(policy);
        uint256 restBefore = before - feeBefore;
        uint256 restNext = next - feeNext;
        uint256 n = policy.recipients.length;
        for (uint256 i; i < n; ++i) {
            uint256 share = policy.recipients[i].share;
            _credit(id, token, policy.recipients[i].account, restNext * share / sum - restBefore * share / sum);
        }
    }

    function _finish(bytes32 id, Channel storage c, Policy calldata policy) private {
        uint128 settled = c.settled;
        uint128 refund = c.deposit - settled;
        c.state = State.Closed;
        (,, uint256 leftover) = splitTotals(policy, settled);
        for (uint256 i; i < leftover; ++i) {
            _credit(id, c.token, policy.recipients[i].account, 1);
        }
        emit Closed(id, settled, refund, leftover);
        if (refund > 0) {
            address token = c.token;
            address payer = c.payer;
            owed[token] -= refund;
            // Paid at once if the token lets it; otherwise credited, so a
            // payer that cannot receive never blocks the payee's close.
            bool paid = IERC20(token).trySafeTransfer(payer, refund);
            if (!paid) {
                owed[token] += refund;
                credits[token][payer] += refund;
                emit Credited(id, token, payer, refund);
            }
            emit Refunded(id, payer, refund, paid);
        }
    }

    function _credit(bytes32 id, address token, address account, uint256 amount) private {
        if (amount == 0) return;
        credits[token][account] += amount;
        emit Credited(id, token, account, amount);
    }

    function _pull(address token, uint128 amount) private returns (uint128 received) {
        if (amount == 0) revert ZeroAmount();
        uint256 balanceBefore = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        uint256 balanceAfter = IERC20(token).balanceOf(address(this));
        if (balanceAfter <= balanceBefore) revert ZeroAmount();
        uint256 diff = balanceAfter - balanceBefore;
        if (diff > type(uint128).max) revert DepositTooLarge();
        // forge-lint: disable-next-line(unsafe-typecast)
        received = uint128(diff); // checked above
        owed[token] += received;
    }

    function _validate(Policy calldata policy) private view {
        if (policy.feeBps > BPS_DENOMINATOR) revert InvalidPolicy();
        // Credits to the zero address or to the escrow itself could never be withdrawn.
        if (policy.feeRecipient == address(0) || policy.feeRecipient == address(this)) revert InvalidPolicy();
        uint256 n = policy.recipients.length;
        if (n == 0 || n > MAX_RECIPIENTS) revert InvalidPolicy();
        uint256 sum;
        for (uint256 i; i < n; ++i) {
            Recipient calldata r = policy.recipients[i];
            if (r.share == 0 || r.account == address(0) || r.account == address(this)) revert InvalidPolicy();
            for (uint256 j; j < i; ++j) {
                if (policy.recipients[j].account == r.account) revert InvalidPolicy();
            }
            sum += r.share;
        }
        if (sum > type(uint64).max) revert InvalidPolicy();
    }

    function _sumOfShares(Policy calldata policy) private pure returns (uint256 sum) {
        uint256 n = policy.recipients.length;
        for (uint256 i; i < n; ++i) {
            sum += policy.recipients[i].share;
        }
    }

    /// fee(g) = ceil(g * bps / 10000); exact for every g below 2^128.
    function _fee(uint16 bps, uint256 gross) private pure returns (uint256) {
        return (gross * bps + (BPS_DENOMINATOR - 1)) / BPS_DENOMINATOR;
    }
}
