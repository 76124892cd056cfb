// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title DepositBox
/// @notice Where users fund their inkmarket accounts, and where withdrawals are paid from.
/// A deposit names the account it is for by a 32-byte reference; the product credits it
/// after enough confirmations. The owner (the platform wallet) pays withdrawals and
/// refunds out of the box, each under an id that can be paid only once, so a payment that
/// is sent again after a lost answer from the node reverts instead of paying twice.
/// @dev Kept apart from PaymentEscrow, whose balance must equal what it holds for jobs.
contract DepositBox is Ownable, ReentrancyGuard {
    mapping(bytes32 => bool) public paid;

    event Deposited(bytes32 indexed ref, address indexed from, uint256 amount);
    event Paid(bytes32 indexed id, address indexed to, uint256 amount);

    error ZeroAmount();
    error ZeroAddress();
    error AlreadyPaid(bytes32 id);
    error OverBalance(uint256 asked, uint256 held);
    error TransferFailed();

    constructor(address owner_) Ownable(owner_) {}

    /// @notice Fund the account whose reference is `ref`.
    function deposit(bytes32 ref) external payable {
        if (msg.value == 0) revert ZeroAmount();
        emit Deposited(ref, msg.sender, msg.value);
    }

    /// @notice Pay `amount` to `to` under `id` (a withdrawal's or a refund's), once.
    function pay(bytes32 id, address payable to, uint256 amount) external onlyOwner nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        if (paid[id]) revert AlreadyPaid(id);
        if (amount > address(this).balance) revert OverBalance(amount, address(this).balance);
        paid[id] = true;
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
        emit Paid(id, to, amount);
    }
}
