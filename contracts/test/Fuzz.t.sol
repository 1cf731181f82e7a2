// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {EscrowBase} from "./utils/Base.sol";
import {StreamWeaveEscrow} from "../src/StreamWeaveEscrow.sol";

contract FuzzTest is EscrowBase {
    address internal r2 = address(0xA2);

    function fuzzPolicy(uint16 bps, uint64[3] memory shares, uint256 count)
        internal
        view
        returns (StreamWeaveEscrow.Policy memory p)
    {
        p.feeBps = uint16(bound(bps, 0, 10_000));
        p.feeRecipient = platform;
        uint256 n = bound(count, 1, 3);
        p.recipients = new StreamWeaveEscrow.Recipient[](n);
        address[3] memory accounts = [r0, r1, r2];
        for (uint256 i; i < n; ++i) {
            p.recipients[i] =
                StreamWeaveEscrow.Recipient(accounts[i], uint64(bound(shares[i], 1, type(uint64).max / 4)));
        }
    }

    /// The split as the spec writes it, computed here independently.
    function testFuzz_split_is_the_spec_formula(uint128 gross, uint16 bps, uint64[3] memory shares, uint256 n)
        public
        view
    {
        StreamWeaveEscrow.Policy memory p = fuzzPolicy(bps, shares, n);
        (uint256 fee, uint256[] memory totals, uint256 leftover) = escrow.splitTotals(p, gross);
        vm.assertEq(fee, specFee(gross, p.feeBps), "fee = ceil(g * bps / 10000)");
        uint256 given = checkShares(p, gross - fee, totals);
        vm.assertEq(fee + given + leftover, gross, "fee + recipients + held = gross");
        vm.assertLt(leftover, p.recipients.length, "fewer held units than recipients");
    }

    function specFee(uint256 gross, uint256 bps) internal pure returns (uint256) {
        uint256 product = gross * bps;
        return product / 10_000 + (product % 10_000 == 0 ? 0 : 1);
    }

    function checkShares(StreamWeaveEscrow.Policy memory p, uint256 rest, uint256[] memory totals)
        internal
        pure
        returns (uint256 given)
    {
        uint256 sum;
        for (uint256 i; i < p.recipients.length; ++i) {
            sum += p.recipients[i].share;
        }
        for (uint256 i; i < totals.length; ++i) {
            vm.assertEq(totals[i], rest * p.recipients[i].share / sum, "floor(rest * share / sum)");
            given += totals[i];
        }
    }

    function testFuzz_split_is_monotone(uint128 a, uint128 b, uint16 bps, uint64[3] memory shares, uint256 n)
        public
        view
    {
        StreamWeaveEscrow.Policy memory p = fuzzPolicy(bps, shares, n);
        (uint128 low, uint128 high) = a <= b ? (a, b) : (b, a);
        (uint256 feeLow, uint256[] memory tLow,) = escrow.splitTotals(p, low);
        (uint256 feeHigh, uint256[] memory tHigh,) = escrow.splitTotals(p, high);
        vm.assertGe(feeHigh, feeLow, "fee monotone");
        for (uint256 i; i < tLow.length; ++i) {
            vm.assertGe(tHigh[i], tLow[i], "recipient monotone");
        }
    }

    /// Settling a channel in many steps (in any order, repeated) credits
    /// exactly what one settle of the highest amount credits.
    function testFuzz_many_settles_equal_one(
        uint128[6] memory amounts,
        uint128 deposit,
        uint16 bps,
        uint64[3] memory shares,
        uint256 n
    ) public {
        deposit = uint128(bound(deposit, 1, type(uint128).max));
        StreamWeaveEscrow.Policy memory p = fuzzPolicy(bps, shares, n);
        StreamWeaveEscrow many = escrow;
        StreamWeaveEscrow one = new StreamWeaveEscrow(WINDOW);
        usdc.mint(payer, uint256(deposit) * 2);
        bytes32 idMany = openOn(many, deposit, p);
        bytes32 idOne = openOn(one, deposit, p);
        uint128 highest;
        for (uint256 i; i < amounts.length; ++i) {
            uint128 amount = uint128(bound(amounts[i], 0, deposit));
            many.settle(idMany, amount, signDigest(SIGNER_KEY, many.voucherDigest(idMany, amount)), p);
            if (amount > highest) highest = amount;
        }
        one.settle(idOne, highest, signDigest(SIGNER_KEY, one.voucherDigest(idOne, highest)), p);
        vm.assertEq(many.channel(idMany).settled, highest, "settled the highest");
        compareCredits(many, one, p);
        vm.warp(block.timestamp + 1 days);
        many.finalize(idMany, p);
        one.finalize(idOne, p);
        compareCredits(many, one, p);
        uint256 total = many.credits(address(usdc), platform);
        for (uint256 i; i < p.recipients.length; ++i) {
            total += many.credits(address(usdc), p.recipients[i].account);
        }
        vm.assertEq(total, highest, "at close every settled unit is credited");
        vm.assertEq(many.owed(address(usdc)), highest, "owed = credits after the refund");
    }

    function openOn(StreamWeaveEscrow e, uint128 deposit, StreamWeaveEscrow.Policy memory p)
        internal
        returns (bytes32)
    {
        vm.startPrank(payer);
        usdc.approve(address(e), deposit);
        bytes32 id = e.open(payee, address(usdc), deposit, 0, signer, uint64(block.timestamp + 1 days), p);
        vm.stopPrank();
        return id;
    }

    function compareCredits(StreamWeaveEscrow a, StreamWeaveEscrow b, StreamWeaveEscrow.Policy memory p) internal view {
        vm.assertEq(a.credits(address(usdc), platform), b.credits(address(usdc), platform), "fee credits");
        for (uint256 i; i < p.recipients.length; ++i) {
            address account = p.recipients[i].account;
            vm.assertEq(a.credits(address(usdc), account), b.credits(address(usdc), account), "recipient credits");
        }
    }
}
