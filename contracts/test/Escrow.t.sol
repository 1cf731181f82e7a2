// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {EscrowBase} from "./utils/Base.sol";
import {Log} from "./utils/Test.sol";
import {StreamWeaveEscrow} from "../src/StreamWeaveEscrow.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {BlockingToken, FeeOnTransferToken, ReentrantToken} from "./utils/Tokens.sol";

contract EscrowTest is EscrowBase {
    // ------------------------------------------------------------------ open

    function test_open_computes_the_spec_id_and_escrows_the_deposit() public {
        bytes32 salt = bytes32(uint256(7));
        bytes32 id = openChannel(1_000_000, salt);
        bytes32 expected =
            keccak256(abi.encode(payer, payee, address(usdc), salt, signer, address(escrow), block.chainid));
        vm.assertEq(id, expected, "id = keccak256(abi.encode(payer, payee, token, salt, signer, escrow, chainId))");
        StreamWeaveEscrow.Channel memory c = escrow.channel(id);
        vm.assertEq(c.payer, payer, "payer is msg.sender");
        vm.assertEq(c.deposit, 1_000_000, "deposit");
        vm.assertEq(c.policyHash, keccak256(abi.encode(policy())), "policy bound by hash");
        vm.assertEq(usdc.balanceOf(address(escrow)), 1_000_000, "escrowed");
        vm.assertEq(escrow.owed(address(usdc)), 1_000_000, "owed");
    }

    function test_open_refuses_bad_parameters() public {
        StreamWeaveEscrow.Policy memory p = policy();
        uint64 exp = uint64(block.timestamp + 1 days);
        vm.startPrank(payer);
        vm.expectRevert(StreamWeaveEscrow.ZeroAddress.selector);
        escrow.open(address(0), address(usdc), 1, 0, signer, exp, p);
        vm.expectRevert(StreamWeaveEscrow.ZeroAddress.selector);
        escrow.open(payee, address(usdc), 1, 0, address(0), exp, p);
        vm.expectRevert(StreamWeaveEscrow.ZeroAddress.selector);
        escrow.open(payee, address(0), 1, 0, signer, exp, p);
        vm.expectRevert(StreamWeaveEscrow.InvalidExpiry.selector);
        escrow.open(payee, address(usdc), 1, 0, signer, uint64(block.timestamp), p);
        vm.expectRevert(StreamWeaveEscrow.ZeroAmount.selector);
        escrow.open(payee, address(usdc), 0, 0, signer, exp, p);
        bytes32 id = escrow.open(payee, address(usdc), 1, 0, signer, exp, p);
        vm.expectRevert(abi.encodeWithSelector(StreamWeaveEscrow.ChannelExists.selector, id));
        escrow.open(payee, address(usdc), 1, 0, signer, exp, p);
        vm.stopPrank();
    }

    function test_open_refuses_invalid_policies() public {
        StreamWeaveEscrow.Policy memory p = policy();
        p.feeBps = 10_001;
        expectInvalid(p);
        p = policy();
        p.feeRecipient = address(0);
        expectInvalid(p);
        p = policy();
        p.recipients[1].share = 0;
        expectInvalid(p);
        p = policy();
        p.recipients[1].account = r0;
        expectInvalid(p);
        p = policy();
        p.recipients[1].account = address(0);
        expectInvalid(p);
        p = policy();
        p.recipients[0].account = address(escrow);
        expectInvalid(p);
        p = policy();
        p.feeRecipient = address(escrow);
        expectInvalid(p);
        p = policy();
        p.recipients = new StreamWeaveEscrow.Recipient[](0);
        expectInvalid(p);
        p.recipients = new StreamWeaveEscrow.Recipient[](17);
        for (uint160 i; i < 17; ++i) {
            p.recipients[i] = StreamWeaveEscrow.Recipient(address(0x100 + i), 1);
        }
        expectInvalid(p);
        p.recipients = new StreamWeaveEscrow.Recipient[](2);
        p.recipients[0] = StreamWeaveEscrow.Recipient(r0, type(uint64).max);
        p.recipients[1] = StreamWeaveEscrow.Recipient(r1, 1);
        expectInvalid(p);
        p.recipients[0].share = type(uint64).max - 1; // the largest sum allowed
        vm.prank(payer);
        escrow.open(payee, address(usdc), 1, 0, signer, uint64(block.timestamp + 1), p);
    }

    function expectInvalid(StreamWeaveEscrow.Policy memory p) internal {
        vm.prank(payer);
        vm.expectRevert(StreamWeaveEscrow.InvalidPolicy.selector);
        escrow.open(payee, address(usdc), 1, 0, signer, uint64(block.timestamp + 1), p);
    }

    function test_top_up_by_the_payer_only() public {
        bytes32 id = openChannel(1000, 0);
        vm.expectRevert(StreamWeaveEscrow.NotPayer.selector);
        escrow.topUp(id, 10);
        vm.prank(payer);
        escrow.topUp(id, 500);
        vm.assertEq(escrow.channel(id).deposit, 1500, "topped up");
        settle(id, 1500);
        vm.prank(payer);
        escrow.requestClose(id);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(StreamWeaveEscrow.ChannelNotOpen.selector, id));
        escrow.topUp(id, 1);
    }

    // --------------------------------------------------------------- settle

    function test_settle_splits_as_the_spec_worked_example() public {
        bytes32 id = openChannel(10_000, 0);
        settle(id, 1000);
        // fee ceil(1000*300/10000) = 30; rest 970 = 646 + 323 + 1 held.
        vm.assertEq(credit(platform), 30, "fee rounded up");
        vm.assertEq(credit(r0), 646, "r0 floor(970*2/3)");
        vm.assertEq(credit(r1), 323, "r1 floor(970/3)");
        vm.assertEq(credit(payee), 0, "only the policy's accounts");
        settle(id, 1001);
        // fee ceil(30.03) = 31; rest 970: nothing more for the recipients.
        vm.assertEq(credit(platform), 31, "fee at 1001");
        vm.assertEq(credit(r0), 646, "r0 at 1001");
        vm.assertEq(credit(r1), 323, "r1 at 1001");
        vm.warp(block.timestamp + 1 days);
        escrow.finalize(id, policy());
        vm.assertEq(credit(r0), 647, "the held unit goes to the first recipient at close");
        vm.assertEq(credit(r1), 323, "r1 at close");
        vm.assertEq(usdc.balanceOf(payer), 1e15 - 1001, "the rest refunded to the payer");
    }

    function test_settle_is_idempotent_and_callable_by_anyone() public {
        bytes32 id = openChannel(10_000, 0);
        bytes memory v500 = voucher(id, 500);
        vm.prank(address(0xD00D));
        escrow.settle(id, 500, v500, policy());
        uint256 before = credit(r0);
        escrow.settle(id, 500, v500, policy()); // the same voucher again
        escrow.settle(id, 300, voucher(id, 300), policy()); // an older one
        escrow.settle(id, 400, hex"", policy()); // at or below settled: nothing checked, nothing moves
        vm.assertEq(escrow.channel(id).settled, 500, "settled");
        vm.assertEq(credit(r0), before, "no second credit");
        vm.assertEq(credit(platform), 15, "fee once");
    }

    function test_settle_many_equals_one_settle() public {
        bytes32 a = openChannel(10_000, bytes32(uint256(1)));
        bytes32 b = openChannel(10_000, bytes32(uint256(2)));
        bytes32[] memory ids = new bytes32[](4);
        uint128[] memory amounts = new uint128[](4);
        bytes[] memory sigs = new bytes[](4);
        StreamWeaveEscrow.Policy[] memory ps = new StreamWeaveEscrow.Policy[](4);
        (ids[0], amounts[0]) = (a, 333);
        (ids[1], amounts[1]) = (b, 7);
        (ids[2], amounts[2]) = (a, 1000);
        (ids[3], amounts[3]) = (a, 999); // stale within the batch: a no-op
        for (uint256 i; i < 4; ++i) {
            sigs[i] = voucher(ids[i], amounts[i]);
            ps[i] = policy();
        }
        escrow.settleMany(ids, amounts, sigs, ps);
        vm.assertEq(escrow.channel(a).settled, 1000, "a");
        vm.assertEq(escrow.channel(b).settled, 7, "b");
        // 1000 -> 30 / 646 / 323; 7 -> fee 1, rest 6 -> 4 / 2.
        vm.assertEq(credit(platform), 31, "fees");
        vm.assertEq(credit(r0), 650, "r0");
        vm.assertEq(credit(r1), 325, "r1");
        vm.expectRevert(StreamWeaveEscrow.LengthMismatch.selector);
        escrow.settleMany(ids, new uint128[](3), sigs, ps);
    }

    function test_settle_refuses_more_than_the_deposit_and_another_policy() public {
        bytes32 id = openChannel(1000, 0);
        bytes memory sig = voucher(id, 1001);
        vm.expectRevert(abi.encodeWithSelector(StreamWeaveEscrow.ExceedsDeposit.selector, uint128(1001), uint128(1000)));
        escrow.settle(id, 1001, sig, policy());
        StreamWeaveEscrow.Policy memory p = policy();
        p.feeRecipient = address(0xBAD);
        sig = voucher(id, 100);
        vm.expectRevert(StreamWeaveEscrow.PolicyMismatch.selector);
        escrow.settle(id, 100, sig, p);
        vm.expectRevert(abi.encodeWithSelector(StreamWeaveEscrow.UnknownChannel.selector, bytes32(uint256(1))));
        escrow.settle(bytes32(uint256(1)), 100, sig, policy());
    }

    // ----------------------------------------------------------- signatures

    function test_refuses_high_s() public {
        bytes32 id = openChannel(1000, 0);
        bytes32 digest = escrow.voucherDigest(id, 100);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(SIGNER_KEY, digest);
        bytes32 highS = bytes32(N - uint256(s));
        uint8 flipped = v == 27 ? 28 : 27;
        vm.assertEq(ecrecover(digest, flipped, r, highS), signer, "the malleated signature is valid for ecrecover");
        vm.expectRevert(abi.encodeWithSelector(ECDSA.ECDSAInvalidSignatureS.selector, highS));
        escrow.settle(id, 100, abi.encodePacked(r, highS, flipped), policy());
        escrow.settle(id, 100, abi.encodePacked(r, s, v), policy());
        vm.assertEq(escrow.channel(id).settled, 100, "the low-s form settles");
    }

    function test_refuses_v_0_and_1() public {
        bytes32 id = openChannel(1000, 0);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(SIGNER_KEY, escrow.voucherDigest(id, 100));
        vm.expectRevert(ECDSA.ECDSAInvalidSignature.selector);
        escrow.settle(id, 100, abi.encodePacked(r, s, v - 27), policy());
        vm.expectRevert(ECDSA.ECDSAInvalidSignature.selector);
        escrow.settle(id, 100, abi.encodePacked(r, s, uint8(29)), policy());
    }

    function test_refuses_64_byte_signatures() public {
        bytes32 id = openChannel(1000, 0);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(SIGNER_KEY, escrow.voucherDigest(id, 100));
        bytes32 vs = bytes32(uint256(s) | (uint256(v - 27) << 255)); // EIP-2098
        vm.expectRevert(abi.encodeWithSelector(ECDSA.ECDSAInvalidSignatureLength.selector, uint256(64)));
        escrow.settle(id, 100, abi.encodePacked(r, vs), policy());
        vm.expectRevert(abi.encodeWithSelector(ECDSA.ECDSAInvalidSignatureLength.selector, uint256(66)));
        escrow.settle(id, 100, abi.encodePacked(r, s, v, uint8(0)), policy());
    }

    function test_digest_is_the_spec_domain() public {
        bytes32 id = openChannel(1000, 0);
        vm.assertEq(escrow.voucherDigest(id, 123), specDigest(block.chainid, address(escrow), id, 123), "digest");
    }

    function test_refuses_another_chain_another_escrow_another_channel_another_key() public {
        bytes32 id = openChannel(1000, bytes32(uint256(1)));
        bytes32 other = openChannel(1000, bytes32(uint256(2)));
        bytes[4] memory wrong = [
            signDigest(SIGNER_KEY, specDigest(block.chainid + 1, address(escrow), id, 100)),
            signDigest(SIGNER_KEY, specDigest(block.chainid, address(0xE5C), id, 100)),
            signDigest(SIGNER_KEY, specDigest(block.chainid, address(escrow), other, 100)),
            signDigest(SIGNER_KEY + 1, specDigest(block.chainid, address(escrow), id, 100))
        ];
        for (uint256 i; i < wrong.length; ++i) {
            vm.expectPartialRevert(StreamWeaveEscrow.WrongSigner.selector);
            escrow.settle(id, 100, wrong[i], policy());
        }
        escrow.settle(id, 100, signDigest(SIGNER_KEY, specDigest(block.chainid, address(escrow), id, 100)), policy());
        vm.assertEq(escrow.channel(id).settled, 100, "the right voucher settles");
    }

    function test_a_voucher_is_bound_to_its_chain_id() public {
        bytes32 id = openChannel(1000, 0);
        bytes memory sig = voucher(id, 100);
        vm.chainId(block.chainid + 1);
        vm.expectPartialRevert(StreamWeaveEscrow.WrongSigner.selector);
        escrow.settle(id, 100, sig, policy());
    }

    // --------------------------------------------------------------- closing

    function test_settle_during_the_window_then_finalize_after_it() public {
        bytes32 id = openChannel(10_000, 0);
        settle(id, 100);
        vm.prank(payer);
        escrow.requestClose(id);
        vm.assertEq(escrow.deadline(id), block.timestamp + WINDOW, "the window");
        vm.warp(block.timestamp + WINDOW - 1);
        settle(id, 1000); // the payee side settles before the window ends
        vm.expectRevert(abi.encodeWithSelector(StreamWeaveEscrow.BeforeDeadline.selector, id));
        escrow.finalize(id, policy());
        vm.warp(block.timestamp + 1);
        bytes memory late = voucher(id, 2000);
        vm.expectRevert(abi.encodeWithSelector(StreamWeaveEscrow.PastDeadline.selector, id));
        escrow.settle(id, 2000, late, policy());
        vm.prank(address(0xD00D)); // anyone
        escrow.finalize(id, policy());
        vm.assertEq(uint256(escrow.channel(id).state), uint256(StreamWeaveEscrow.State.Closed), "closed");
        vm.assertEq(usdc.balanceOf(payer), 1e15 - 1000, "refund of deposit minus settled");
        vm.assertEq(credit(r0), 647, "leftover given at close");
        vm.expectRevert(abi.encodeWithSelector(StreamWeaveEscrow.ChannelNotOpen.selector, id));
        escrow.finalize(id, policy());
        escrow.settle(id, 1000, hex"", policy()); // stale after close: still a no-op
    }

    function test_finalize_at_expiry_without_a_request() public {
        bytes32 id = openChannel(10_000, 0);
        settle(id, 10);
        vm.warp(block.timestamp + 1 days - 1);
        vm.expectRevert(abi.encodeWithSelector(StreamWeaveEscrow.BeforeDeadline.selector, id));
        escrow.finalize(id, policy());
        vm.warp(block.timestamp + 1);
        bytes memory v20 = voucher(id, 20);
        vm.expectRevert(abi.encodeWithSelector(StreamWeaveEscrow.PastDeadline.selector, id));
        escrow.settle(id, 20, v20, policy());
        escrow.finalize(id, policy());
        vm.assertEq(usdc.balanceOf(payer), 1e15 - 10, "refund");
    }

    function test_a_window_past_expiry_ends_at_expiry() public {
        bytes32 id = openChannel(10_000, 0);
        vm.warp(block.timestamp + 1 days - 10);
        vm.prank(payer);
        escrow.requestClose(id);
        vm.assertEq(escrow.deadline(id), block.timestamp + 10, "deadline is the expiry");
        vm.assertEq(escrow.channel(id).closesAt, block.timestamp + 10, "closesAt is the expiry");
    }

    function test_payee_closes_at_once_and_a_stale_settle_is_a_no_op() public {
        bytes32 id = openChannel(10_000, 0);
        bytes memory v300 = voucher(id, 300);
        bytes memory v500 = voucher(id, 500);
        bytes memory v600 = voucher(id, 600);
        escrow.settle(id, 300, v300, policy());
        vm.expectRevert(StreamWeaveEscrow.NotPayee.selector);
        escrow.close(id, 500, v500, policy());
        vm.prank(payee);
        escrow.close(id, 500, v500, policy());
        vm.assertEq(usdc.balanceOf(payer), 1e15 - 500, "refund at once");
        // A settle racing the close, mined after it.
        escrow.settle(id, 500, v500, policy());
        escrow.settle(id, 300, v300, policy());
        vm.expectRevert(abi.encodeWithSelector(StreamWeaveEscrow.ChannelNotOpen.selector, id));
        escrow.settle(id, 600, v600, policy());
        vm.assertEq(escrow.channel(id).settled, 500, "settled");
        vm.assertEq(escrow.owed(address(usdc)), 500, "only credits remain");
    }

    function test_settle_mined_before_the_payees_close() public {
        bytes32 id = openChannel(10_000, 0);
        bytes memory v500 = voucher(id, 500);
        settle(id, 600); // a newer voucher settled by someone else first
        vm.prank(payee);
        escrow.close(id, 500, v500, policy()); // the close still goes through
        vm.assertEq(escrow.channel(id).settled, 600, "the higher amount stands");
        vm.assertEq(usdc.balanceOf(payer), 1e15 - 600, "refund");
    }

    function test_payer_close_request_rules() public {
        bytes32 id = openChannel(10_000, 0);
        vm.expectRevert(StreamWeaveEscrow.NotPayer.selector);
        escrow.requestClose(id);
        vm.prank(payer);
        escrow.requestClose(id);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(StreamWeaveEscrow.ChannelNotOpen.selector, id));
        escrow.requestClose(id);
        // the payee can still close at once during the window
        vm.prank(payee);
        escrow.close(id, 0, hex"", policy());
        vm.assertEq(usdc.balanceOf(payer), 1e15, "all refunded");
    }

    // -------------------------------------------------------------- withdraw

    function test_withdraw_pays_credits_once() public {
        bytes32 id = openChannel(10_000, 0);
        settle(id, 1000);
        vm.prank(r0);
        escrow.withdraw(address(usdc), address(0x5AFE));
        vm.assertEq(usdc.balanceOf(address(0x5AFE)), 646, "paid");
        vm.prank(r0);
        vm.expectRevert(StreamWeaveEscrow.ZeroAmount.selector);
        escrow.withdraw(address(usdc), r0);
        vm.assertEq(escrow.owed(address(usdc)), 10_000 - 646, "owed");
        vm.assertEq(usdc.balanceOf(address(escrow)), escrow.owed(address(usdc)), "balance");
    }

    function test_a_recipient_that_cannot_receive_blocks_nobody() public {
        BlockingToken token = new BlockingToken();
        token.mint(payer, 1e9);
        vm.startPrank(payer);
        token.approve(address(escrow), type(uint256).max);
        bytes32 id = escrow.open(payee, address(token), 10_000, 0, signer, uint64(block.timestamp + 1 days), policy());
        vm.stopPrank();
        token.setBlocked(r1, true);
        token.setBlocked(payer, true);
        settle(id, 1000);
        vm.prank(r1);
        vm.expectRevert(bytes("blocked"));
        escrow.withdraw(address(token), r1);
        vm.prank(r0);
        escrow.withdraw(address(token), r0);
        vm.assertEq(token.balanceOf(r0), 646, "r0 paid");
        settle(id, 2000);
        vm.warp(block.timestamp + 1 days);
        escrow.finalize(id, policy()); // the refund cannot be paid: it is credited
        vm.assertEq(escrow.credits(address(token), payer), 8000, "refund credited");
        vm.assertEq(token.balanceOf(address(escrow)), escrow.owed(address(token)), "balance is what is owed");
        token.setBlocked(payer, false);
        vm.prank(payer);
        escrow.withdraw(address(token), payer);
        vm.assertEq(token.balanceOf(payer), 1e9 - 10_000 + 8000, "refund withdrawn");
    }

    // ------------------------------------------------------ hostile tokens

    function test_fee_on_transfer_token_counts_what_arrived() public {
        FeeOnTransferToken token = new FeeOnTransferToken();
        token.mint(payer, 1e9);
        vm.startPrank(payer);
        token.approve(address(escrow), type(uint256).max);
        bytes32 id = escrow.open(payee, address(token), 10_000, 0, signer, uint64(block.timestamp + 1 days), policy());
        escrow.topUp(id, 1000);
        vm.stopPrank();
        vm.assertEq(escrow.channel(id).deposit, 9900 + 990, "deposit as received");
        vm.assertEq(token.balanceOf(address(escrow)), escrow.owed(address(token)), "balance is what is owed");
        bytes memory over = voucher(id, 10_891);
        vm.expectRevert(
            abi.encodeWithSelector(StreamWeaveEscrow.ExceedsDeposit.selector, uint128(10_891), uint128(10_890))
        );
        escrow.settle(id, 10_891, over, policy());
        settle(id, 10_890);
        vm.prank(payee);
        escrow.close(id, 0, hex"", policy());
        vm.prank(r0);
        escrow.withdraw(address(token), r0);
        vm.assertGe(token.balanceOf(address(escrow)), escrow.owed(address(token)), "covered");
    }

    function test_reentrant_token_cannot_reenter() public {
        ReentrantToken token = new ReentrantToken();
        token.mint(payer, 1e9);
        vm.startPrank(payer);
        token.approve(address(escrow), type(uint256).max);
        bytes32 id = escrow.open(payee, address(token), 10_000, 0, signer, uint64(block.timestamp + 1 days), policy());
        vm.stopPrank();
        escrow.settle(id, 500, voucher(id, 500), policy());
        // While r0 withdraws, the token tries to settle a newer voucher.
        token.arm(address(escrow), abi.encodeCall(escrow.settle, (id, 900, voucher(id, 900), policy())));
        vm.prank(r0);
        escrow.withdraw(address(token), r0);
        vm.assertEq(token.attempts(), 1, "the token called back");
        vm.assertEq(token.reentered(), false, "and was refused");
        vm.assertEq(bytes4(token.refusal()), ReentrancyGuard.ReentrancyGuardReentrantCall.selector, "by the guard");
        vm.assertEq(escrow.channel(id).settled, 500, "nothing settled inside");
        // While the payer tops up, the token tries to withdraw r0's credits.
        vm.prank(r1);
        token.arm(address(escrow), abi.encodeCall(escrow.withdraw, (address(token), address(token))));
        vm.prank(payer);
        escrow.topUp(id, 100);
        vm.assertEq(token.reentered(), false, "refused again");
        vm.assertEq(escrow.channel(id).deposit, 10_100, "top-up counted once");
        vm.assertEq(token.balanceOf(address(escrow)), escrow.owed(address(token)), "balance is what is owed");
    }

    // ---------------------------------------------------------------- events

    function test_every_state_change_has_an_event() public {
        vm.recordLogs();
        bytes32 id = openChannel(10_000, 0);
        vm.prank(payer);
        escrow.topUp(id, 100);
        settle(id, 1000);
        vm.prank(payer);
        escrow.requestClose(id);
        vm.warp(block.timestamp + WINDOW);
        escrow.finalize(id, policy());
        vm.prank(r0);
        escrow.withdraw(address(usdc), r0);
        bytes32[] memory expected = new bytes32[](12);
        expected[0] = StreamWeaveEscrow.ChannelOpened.selector;
        expected[1] = StreamWeaveEscrow.ToppedUp.selector;
        expected[2] = StreamWeaveEscrow.Settled.selector;
        expected[3] = StreamWeaveEscrow.Credited.selector; // fee
        expected[4] = StreamWeaveEscrow.Credited.selector; // r0
        expected[5] = StreamWeaveEscrow.Credited.selector; // r1
        expected[6] = StreamWeaveEscrow.CloseRequested.selector;
        expected[7] = StreamWeaveEscrow.Credited.selector; // the held unit
        expected[8] = StreamWeaveEscrow.Closed.selector;
        expected[9] = StreamWeaveEscrow.Refunded.selector;
        expected[10] = StreamWeaveEscrow.Withdrawn.selector;
        expected[11] = bytes32(0);
        Log[] memory logs = vm.getRecordedLogs();
        uint256 k;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter != address(escrow)) continue; // the token's own events
            vm.assertEq(logs[i].topics[0], expected[k], string.concat("event ", vm.toString(k)));
            if (expected[k] == StreamWeaveEscrow.Settled.selector) {
                vm.assertEq(logs[i].topics[1], id, "indexed by channel");
                (uint128 cumulative, uint128 amount) = abi.decode(logs[i].data, (uint128, uint128));
                vm.assertEq(cumulative, 1000, "cumulative");
                vm.assertEq(amount, 1000, "step");
            }
            ++k;
        }
        vm.assertEq(k, 11, "eleven escrow events");
    }
}
