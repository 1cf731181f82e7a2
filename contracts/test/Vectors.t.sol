// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {EscrowBase} from "./utils/Base.sol";
import {StreamWeaveEscrow} from "../src/StreamWeaveEscrow.sol";
import {TestUSDC} from "../src/TestUSDC.sol";

/// The vectors shared with the Rust ledger (crates/ledger/tests/vectors/):
/// the same channel ids, voucher digests, signatures and splits.
contract VectorsTest is EscrowBase {
    function readVectors(string memory name) internal view returns (string memory) {
        return vm.readFile(string.concat(vm.projectRoot(), "/../crates/ledger/tests/vectors/", name));
    }

    function fieldOf(string memory prefix, uint256 i, string memory field) internal pure returns (string memory) {
        return string.concat(prefix, "[", vm.toString(i), "].", field);
    }

    struct VoucherVector {
        uint256 chainId;
        address escrow;
        address token;
        address payer;
        address payee;
        address signer;
        bytes32 salt;
        bytes32 id;
        uint256 amount;
        bytes32 digest;
        bytes signature;
    }

    function readVoucher(string memory json, uint256 i) internal pure returns (VoucherVector memory v) {
        string memory p = ".vouchers";
        v.chainId = vm.parseJsonUint(json, fieldOf(p, i, "chain_id"));
        v.escrow = vm.parseJsonAddress(json, fieldOf(p, i, "escrow"));
        v.token = vm.parseJsonAddress(json, fieldOf(p, i, "token"));
        v.payer = vm.parseJsonAddress(json, fieldOf(p, i, "payer"));
        v.payee = vm.parseJsonAddress(json, fieldOf(p, i, "payee"));
        v.signer = vm.parseJsonAddress(json, fieldOf(p, i, "signer"));
        v.salt = vm.parseJsonBytes32(json, fieldOf(p, i, "salt"));
        v.id = vm.parseJsonBytes32(json, fieldOf(p, i, "channel_id"));
        v.amount = vm.parseUint(vm.parseJsonString(json, fieldOf(p, i, "cumulative_amount")));
        v.digest = vm.parseJsonBytes32(json, fieldOf(p, i, "digest"));
        v.signature = vm.parseJsonBytes(json, fieldOf(p, i, "signature"));
        vm.assertEq(vm.addr(vm.parseJsonUint(json, fieldOf(p, i, "signer_private_key"))), v.signer, "signer key");
    }

    function test_vouchers_channel_ids_digests_and_signatures() public {
        string memory json = readVectors("vouchers.json");
        assertEqString(vm.parseJsonString(json, ".domain.name"), "StreamWeave");
        assertEqString(vm.parseJsonString(json, ".domain.version"), "1");
        bytes memory code = address(escrow).code;
        uint256 count;
        uint256 settled;
        for (uint256 i; vm.keyExistsJson(json, string.concat(".vouchers[", vm.toString(i), "]")); ++i) {
            VoucherVector memory v = readVoucher(json, i);
            // The contract's own code, at the vector's escrow address and chain.
            vm.chainId(v.chainId);
            vm.etch(v.escrow, code);
            StreamWeaveEscrow e = StreamWeaveEscrow(v.escrow);
            vm.assertEq(e.channelId(v.payer, v.payee, v.token, v.salt, v.signer), v.id, "channel id");
            vm.assertEq(e.voucherDigest(v.id, uint128(v.amount)), v.digest, "voucher digest");
            vm.assertEq(specDigest(v.chainId, v.escrow, v.id, uint128(v.amount)), v.digest, "digest from the spec");
            (uint8 sv, bytes32 r, bytes32 s) = split(v.signature);
            vm.assertEq(ecrecover(v.digest, sv, r, s), v.signer, "signature recovers the signer");
            // Where the vector names a token, open that very channel and
            // settle the vector's signature on chain.
            if (v.token != address(0)) {
                settleVector(e, v);
                settled += 1;
            }
            count += 1;
        }
        vm.assertEq(count, 4, "all voucher vectors read");
        vm.assertEq(settled, 1, "the vector with a token settled on chain");
    }

    function settleVector(StreamWeaveEscrow e, VoucherVector memory v) internal {
        vm.etch(v.token, address(usdc).code);
        TestUSDC(v.token).mint(v.payer, v.amount);
        vm.startPrank(v.payer);
        TestUSDC(v.token).approve(address(e), v.amount);
        bytes32 opened = e.open(
            v.payee, v.token, uint128(v.amount), v.salt, v.signer, uint64(block.timestamp + 1 days), soleTo(v.payee)
        );
        vm.stopPrank();
        vm.assertEq(opened, v.id, "the id open computes");
        e.settle(v.id, uint128(v.amount), v.signature, soleTo(v.payee));
        vm.assertEq(e.channel(v.id).settled, v.amount, "settled with the vector's signature");
        uint256 fee = v.amount * 300 / 10_000 + (v.amount * 300 % 10_000 == 0 ? 0 : 1);
        vm.assertEq(e.credits(v.token, platform), fee, "fee");
        vm.assertEq(e.credits(v.token, v.payee), v.amount - fee, "payee");
    }

    function test_splits_match_the_ledger() public {
        string memory json = readVectors("splits.json");
        uint256 cases;
        for (uint256 i; vm.keyExistsJson(json, string.concat(".splits[", vm.toString(i), "]")); ++i) {
            string memory c = string.concat(".splits[", vm.toString(i), "]");
            StreamWeaveEscrow.Policy memory p;
            p.feeBps = uint16(vm.parseJsonUint(json, string.concat(c, ".platform_fee_bps")));
            p.feeRecipient = platform;
            address[] memory accounts = vm.parseJsonAddressArray(json, string.concat(c, ".recipients"));
            string[] memory shares = vm.parseJsonStringArray(json, string.concat(c, ".shares"));
            p.recipients = new StreamWeaveEscrow.Recipient[](accounts.length);
            for (uint256 k; k < accounts.length; ++k) {
                p.recipients[k] = StreamWeaveEscrow.Recipient(accounts[k], uint64(vm.parseUint(shares[k])));
            }
            checkCase(json, c, p);
            cases += 1;
        }
        vm.assertEq(cases, 6, "all split vectors read");
    }

    /// Settles every step of a case on a fresh escrow and checks the credits
    /// after each, then closes and checks the leftover units.
    function checkCase(string memory json, string memory c, StreamWeaveEscrow.Policy memory p) internal {
        escrow = new StreamWeaveEscrow(WINDOW);
        uint256 steps;
        while (vm.keyExistsJson(json, string.concat(c, ".steps[", vm.toString(steps), "]"))) ++steps;
        uint256 last =
            vm.parseUint(vm.parseJsonString(json, string.concat(c, ".steps[", vm.toString(steps - 1), "].gross")));
        usdc.mint(payer, last);
        vm.startPrank(payer);
        usdc.approve(address(escrow), last);
        bytes32 id =
            escrow.open(payee, address(usdc), uint128(last), bytes32(0), signer, uint64(block.timestamp + 1 days), p);
        vm.stopPrank();
        for (uint256 s; s < steps; ++s) {
            checkStep(json, string.concat(c, ".steps[", vm.toString(s), "]"), id, p);
        }
        string[] memory expected =
            vm.parseJsonStringArray(json, string.concat(c, ".steps[", vm.toString(steps - 1), "].recipients_at_close"));
        vm.prank(payee);
        escrow.close(id, 0, "", p);
        for (uint256 k; k < expected.length; ++k) {
            vm.assertEq(credit(p.recipients[k].account), vm.parseUint(expected[k]), "recipient at close");
        }
        vm.assertEq(usdc.balanceOf(address(escrow)), escrow.owed(address(usdc)), "balance is what is owed");
    }

    function num(string memory json, string memory key) internal pure returns (uint256) {
        return vm.parseUint(vm.parseJsonString(json, key));
    }

    function checkStep(string memory json, string memory step, bytes32 id, StreamWeaveEscrow.Policy memory p) internal {
        uint256 gross = num(json, string.concat(step, ".gross"));
        (uint256 fee, uint256[] memory totals, uint256 leftover) = escrow.splitTotals(p, gross);
        vm.assertEq(fee, num(json, string.concat(step, ".fee")), "splitTotals fee");
        vm.assertEq(leftover, num(json, string.concat(step, ".leftover")), "splitTotals leftover");
        escrow.settle(id, uint128(gross), voucher(id, uint128(gross)), p);
        vm.assertEq(credit(platform), fee, "fee credited");
        string[] memory expected = vm.parseJsonStringArray(json, string.concat(step, ".recipients"));
        for (uint256 k; k < expected.length; ++k) {
            vm.assertEq(totals[k], vm.parseUint(expected[k]), "splitTotals recipient");
            vm.assertEq(credit(p.recipients[k].account), vm.parseUint(expected[k]), "recipient credited");
        }
    }

    function soleTo(address account) internal view returns (StreamWeaveEscrow.Policy memory p) {
        p.feeBps = 300;
        p.feeRecipient = platform;
        p.recipients = new StreamWeaveEscrow.Recipient[](1);
        p.recipients[0] = StreamWeaveEscrow.Recipient(account, 1);
    }

    function split(bytes memory signature) internal pure returns (uint8 v, bytes32 r, bytes32 s) {
        require(signature.length == 65, "65 bytes");
        assembly {
            r := mload(add(signature, 32))
            s := mload(add(signature, 64))
            v := byte(0, mload(add(signature, 96)))
        }
    }

    function assertEqString(string memory a, string memory b) internal pure {
        vm.assertEq(keccak256(bytes(a)), keccak256(bytes(b)), string.concat("expected ", b, ", got ", a));
    }
}
