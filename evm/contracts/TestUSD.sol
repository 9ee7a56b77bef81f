// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title A stand-in for USDC on test chains and localnets only
/// @notice 6 decimals like USDC. Anyone can `mint` any amount to anyone: never deploy it where the
/// token is meant to have value.
contract TestUSD is ERC20 {
    constructor() ERC20("derivd Test USD (test only, freely mintable)", "tUSD") {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Creates `amount` units for `to`; open to every caller (test token).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
