// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title A test USDC for development chains
/// @notice 6 decimals like USDC; anyone can mint any amount to anyone. It is
/// a test token and worth nothing.
contract TestUSDC is ERC20 {
    constructor() ERC20("StreamWeave Test USDC", "tUSDC") {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// Mints `amount` to `to`; open to anyone.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
