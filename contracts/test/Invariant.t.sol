// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {InvariantTest, Test} from "./utils/Test.sol";
import {StreamWeaveEscrow} from "../src/StreamWeaveEscrow.sol";
import {TestUSDC} from "../src/TestUSDC.sol";

/// Random sequences of every escrow action, on a few channels and two
/// policies; the test checks the invariants after each call.
contract Handler is Test {
    uint256 internal constant SIGNER_KEY = 0x5157a11;
    StreamWeaveEscrow public escrow;
    TestUSDC public usdc;
    address public signer;
    address public platform = address(0xFEE);
    address[3] public recipientsOf = [address(0xA0), address(0xA1), address(0xA2)];
    address[3] public payers = [address(0xB0), address(0xB1), address(0xB2)];
    address public payee = address(0xC0FFEE);

    bytes32[] public ids;
    mapping(bytes32 => uint256) public policyOf;
    mapping(address => uint256) public withdrawn;
    uint256 public calls;

    constructor() {
        usdc = new TestUSDC();
        escrow = new StreamWeaveEscrow(600);
        signer = vm.addr(SIGNER_KEY);
    }

    function policy(uint256 which) public view returns (StreamWeaveEscrow.Policy memory p) {
        p.feeRecipient = platform;
        if (which == 0) {
            p.feeBps = 300;
            p.recipients = new StreamWeaveEscrow.Recipient[](2);
            p.recipients[0] = StreamWeaveEscrow.Recipient(recipientsOf[0], 2);
            p.recipients[1] = StreamWeaveEscrow.Recipient(recipientsOf[1], 1);
        } else {
            p.feeBps = 250;
            p.recipients = new StreamWeaveEscrow.Recipient[](3);
            p.recipients[0] = StreamWeaveEscrow.Recipient(recipientsOf[1], 5);
            p.recipients[1] = StreamWeaveEscrow.Recipient(recipientsOf[2], 3);
            p.recipients[2] = StreamWeaveEscrow.Recipient(recipientsOf[0], 7);
        }
    }

    function channelCount() external view returns (uint256) {
        return ids.length;
    }

    function pick(uint256 seed) internal view returns (bytes32) {
        return ids[seed % ids.length];
    }

    function open(uint256 payerSeed, uint128 deposit, uint256 which, uint64 life) external {
        if (ids.length >= 8) return;
        address payer = payers[payerSeed % 3];
        deposit = uint128(bound(deposit, 1, 1e13));
        which = which % 2;
        usdc.mint(payer, deposit);
        vm.startPrank(payer);
        usdc.approve(address(escrow), deposit);
        bytes32 id = escrow.open(
            payee,
            address(usdc),
            deposit,
            bytes32(ids.length),
            signer,
            uint64(block.timestamp + bound(life, 60, 3 days)),
            policy(which)
        );
        vm.stopPrank();
        ids.push(id);
        policyOf[id] = which;
        calls++;
    }

    function topUp(uint256 seed, uint128 amount) external {
        if (ids.length == 0) return;
        bytes32 id = pick(seed);
        StreamWeaveEscrow.Channel memory c = escrow.channel(id);
        if (c.state != StreamWeaveEscrow.State.Open || block.timestamp >= c.expiresAt) return;
        amount = uint128(bound(amount, 1, 1e12));
        usdc.mint(c.payer, amount);
        vm.startPrank(c.payer);
        usdc.approve(address(escrow), amount);
        escrow.topUp(id, amount);
        vm.stopPrank();
        calls++;
    }

    function settle(uint256 seed, uint128 amount) external {
        if (ids.length == 0) return;
        bytes32 id = pick(seed);
        StreamWeaveEscrow.Channel memory c = escrow.channel(id);
        if (c.state == StreamWeaveEscrow.State.Closed || block.timestamp >= escrow.deadline(id)) return;
        amount = uint128(bound(amount, 0, c.deposit));
        escrow.settle(id, amount, sign(id, amount), policy(policyOf[id]));
        calls++;
    }

    function settleMany(uint256 seed, uint128 a, uint128 b) external {
        if (ids.length == 0) return;
        bytes32[] memory batch = new bytes32[](2);
        uint128[] memory amounts = new uint128[](2);
        bytes[] memory sigs = new bytes[](2);
        StreamWeaveEscrow.Policy[] memory ps = new StreamWeaveEscrow.Policy[](2);
        batch[0] = pick(seed);
        batch[1] = pick(seed / 7);
        amounts[0] = a;
        amounts[1] = b;
        for (uint256 i; i < 2; ++i) {
            StreamWeaveEscrow.Channel memory c = escrow.channel(batch[i]);
            if (c.state == StreamWeaveEscrow.State.Closed || block.timestamp >= escrow.deadline(batch[i])) return;
            amounts[i] = uint128(bound(amounts[i], 0, c.deposit));
            sigs[i] = sign(batch[i], amounts[i]);
            ps[i] = policy(policyOf[batch[i]]);
        }
        escrow.settleMany(batch, amounts, sigs, ps);
        calls++;
    }

    function requestClose(uint256 seed) external {
        if (ids.length == 0) return;
        bytes32 id = pick(seed);
        StreamWeaveEscrow.Channel memory c = escrow.channel(id);
        if (c.state != StreamWeaveEscrow.State.Open || block.timestamp >= c.expiresAt) return;
        vm.prank(c.payer);
        escrow.requestClose(id);
        calls++;
    }

    function close(uint256 seed, uint128 amount) external {
        if (ids.length == 0) return;
        bytes32 id = pick(seed);
        StreamWeaveEscrow.Channel memory c = escrow.channel(id);
        if (c.state == StreamWeaveEscrow.State.Closed || block.timestamp >= escrow.deadline(id)) return;
        amount = uint128(bound(amount, 0, c.deposit));
        bytes memory sig = sign(id, amount);
        vm.prank(payee);
        escrow.close(id, amount, sig, policy(policyOf[id]));
        calls++;
    }

    function finalize(uint256 seed) external {
        if (ids.length == 0) return;
        bytes32 id = pick(seed);
        StreamWeaveEscrow.Channel memory c = escrow.channel(id);
        if (c.state == StreamWeaveEscrow.State.Closed || block.timestamp < escrow.deadline(id)) return;
        escrow.finalize(id, policy(policyOf[id]));
        calls++;
    }

    function withdraw(uint256 seed) external {
        address account = seed % 4 == 3 ? platform : recipientsOf[seed % 4];
        uint256 amount = escrow.credits(address(usdc), account);
        if (amount == 0) return;
        vm.prank(account);
        escrow.withdraw(address(usdc), account);
        withdrawn[account] += amount;
        calls++;
    }

    function warp(uint256 dt) external {
        vm.warp(block.timestamp + bound(dt, 1, 2 hours));
    }

    function sign(bytes32 id, uint128 amount) internal view returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(SIGNER_KEY, escrow.voucherDigest(id, amount));
        return abi.encodePacked(r, s, v);
    }
}

contract EscrowInvariantTest is InvariantTest {
    Handler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        handler = new Handler();
        targetContract(address(handler));
    }

    /// The token balance covers what the escrow owes, and what it owes is
    /// the open escrow (deposits minus settled) plus the held leftover units
    /// plus the credits not yet withdrawn.
    function invariant_balance_covers_deposits_settled_credits_and_held() public view {
        StreamWeaveEscrow escrow = handler.escrow();
        address token = address(handler.usdc());
        uint256 openEscrow;
        uint256 held;
        for (uint256 i; i < handler.channelCount(); ++i) {
            bytes32 id = handler.ids(i);
            StreamWeaveEscrow.Channel memory c = escrow.channel(id);
            if (c.state == StreamWeaveEscrow.State.Closed) continue;
            openEscrow += c.deposit - c.settled;
            (,, uint256 leftover) = escrow.splitTotals(handler.policy(handler.policyOf(id)), c.settled);
            held += leftover;
        }
        uint256 credited = escrow.credits(token, handler.platform());
        for (uint256 k; k < 3; ++k) {
            credited += escrow.credits(token, handler.recipientsOf(k));
            credited += escrow.credits(token, handler.payers(k));
        }
        vm.assertEq(escrow.owed(token), openEscrow + held + credited, "owed = open escrow + held + credits");
        vm.assertGe(handler.usdc().balanceOf(address(escrow)), escrow.owed(token), "the balance covers it");
    }

    /// Whatever the order and batching of settles, each account holds (with
    /// what it withdrew) exactly the spec's totals for each channel's settled
    /// amount, plus its leftover units of the closed channels.
    function invariant_credits_are_the_split_of_settled_amounts() public view {
        StreamWeaveEscrow escrow = handler.escrow();
        address token = address(handler.usdc());
        uint256[4] memory expected; // recipients 0..2, then the platform
        for (uint256 i; i < handler.channelCount(); ++i) {
            bytes32 id = handler.ids(i);
            StreamWeaveEscrow.Channel memory c = escrow.channel(id);
            StreamWeaveEscrow.Policy memory p = handler.policy(handler.policyOf(id));
            (uint256 fee, uint256[] memory totals, uint256 leftover) = escrow.splitTotals(p, c.settled);
            expected[3] += fee;
            for (uint256 r; r < totals.length; ++r) {
                uint256 units = totals[r];
                if (c.state == StreamWeaveEscrow.State.Closed && r < leftover) units += 1;
                expected[indexOf(p.recipients[r].account)] += units;
            }
        }
        for (uint256 k; k < 4; ++k) {
            address account = k == 3 ? handler.platform() : handler.recipientsOf(k);
            vm.assertEq(
                escrow.credits(token, account) + handler.withdrawn(account), expected[k], "credits follow the split"
            );
        }
    }

    function indexOf(address account) internal view returns (uint256) {
        for (uint256 k; k < 3; ++k) {
            if (handler.recipientsOf(k) == account) return k;
        }
        revert("unknown recipient");
    }

    function invariant_the_handler_does_things() public view {
        // Sanity: a run that opened nothing would check nothing.
        vm.assertTrue(handler.calls() == 0 || handler.channelCount() > 0, "calls imply channels");
    }
}
