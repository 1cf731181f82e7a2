// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "./Test.sol";
import {StreamWeaveEscrow} from "../../src/StreamWeaveEscrow.sol";
import {TestUSDC} from "../../src/TestUSDC.sol";

/// An escrow, a token, a payer with funds and a signer key, and helpers
/// that sign vouchers the way a player does.
abstract contract EscrowBase is Test {
    uint64 internal constant WINDOW = 600;
    uint256 internal constant SIGNER_KEY = 0x5157a11;
    /// secp256k1's group order.
    uint256 internal constant N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    StreamWeaveEscrow internal escrow;
    TestUSDC internal usdc;
    address internal signer;
    address internal payer = address(0xBEEF01);
    address internal payee = address(0xC0FFEE);
    address internal platform = address(0xFEE);
    address internal r0 = address(0xA0);
    address internal r1 = address(0xA1);

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        usdc = new TestUSDC();
        escrow = new StreamWeaveEscrow(WINDOW);
        signer = vm.addr(SIGNER_KEY);
        usdc.mint(payer, 1e15);
        vm.prank(payer);
        usdc.approve(address(escrow), type(uint256).max);
    }

    /// 3% fee, then 2:1 between r0 and r1 (the spec's worked example).
    function policy() internal view returns (StreamWeaveEscrow.Policy memory p) {
        p.feeBps = 300;
        p.feeRecipient = platform;
        p.recipients = new StreamWeaveEscrow.Recipient[](2);
        p.recipients[0] = StreamWeaveEscrow.Recipient(r0, 2);
        p.recipients[1] = StreamWeaveEscrow.Recipient(r1, 1);
    }

    function openChannel(uint128 deposit, bytes32 salt) internal returns (bytes32) {
        vm.prank(payer);
        return escrow.open(payee, address(usdc), deposit, salt, signer, uint64(block.timestamp + 1 days), policy());
    }

    function signDigest(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function voucher(bytes32 id, uint128 amount) internal view returns (bytes memory) {
        return signDigest(SIGNER_KEY, escrow.voucherDigest(id, amount));
    }

    function settle(bytes32 id, uint128 amount) internal {
        escrow.settle(id, amount, voucher(id, amount), policy());
    }

    /// The EIP-712 digest of a voucher, computed here from the spec alone.
    function specDigest(uint256 chainId, address verifyingContract, bytes32 id, uint128 amount)
        internal
        pure
        returns (bytes32)
    {
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("StreamWeave"),
                keccak256("1"),
                chainId,
                verifyingContract
            )
        );
        bytes32 structHash =
            keccak256(abi.encode(keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)"), id, amount));
        return keccak256(abi.encodePacked("\x19\x01", domain, structHash));
    }

    function credit(address account) internal view returns (uint256) {
        return escrow.credits(address(usdc), account);
    }
}
