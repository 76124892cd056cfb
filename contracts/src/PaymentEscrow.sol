// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title PaymentEscrow
/// @notice Holds each job's payment until the marketplace settles it. Payouts are credited
/// to balances that their owners withdraw themselves (pull payments), so no settlement
/// ever sends ether to an address that could re-enter or refuse it.
contract PaymentEscrow is Ownable, ReentrancyGuard {
    struct Escrow {
        uint128 amount;
        bool locked;
    }

    address public marketplace;
    address public treasury;
    // Totals are stored plus one so they never return to zero: writing a zero slot back to
    // non-zero costs 20,000 gas, and an idle marketplace would pay it on every job.
    uint256 private _escrowedPlusOne = 1;
    uint256 private _withdrawablePlusOne = 1;
    mapping(uint256 => Escrow) public escrows;
    mapping(address => uint256) public withdrawable;

    event Deposited(uint256 indexed jobId, uint256 amount);
    event Locked(uint256 indexed jobId);
    event Released(uint256 indexed jobId, address indexed host, uint256 hostAmount, uint256 fee, uint256 refund);
    event Refunded(uint256 indexed jobId, address indexed client, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);
    event TreasuryChanged(address treasury);

    error NotMarketplace();
    error MarketplaceAlreadySet();
    error UnknownEscrow(uint256 jobId);
    error EscrowExists(uint256 jobId);
    error OverEscrow(uint256 jobId, uint256 asked, uint256 held);
    error NothingToWithdraw();
    error TransferFailed();
    error ZeroAddress();

    constructor(address owner_, address treasury_) Ownable(owner_) {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
    }

    function totalEscrowed() external view returns (uint256) {
        return _escrowedPlusOne - 1;
    }

    function totalWithdrawable() external view returns (uint256) {
        return _withdrawablePlusOne - 1;
    }

    modifier onlyMarketplace() {
        if (msg.sender != marketplace) revert NotMarketplace();
        _;
    }

    /// @notice Set once, at deployment: the only contract allowed to move funds.
    function setMarketplace(address marketplace_) external onlyOwner {
        if (marketplace != address(0)) revert MarketplaceAlreadySet();
        if (marketplace_ == address(0)) revert ZeroAddress();
        marketplace = marketplace_;
    }

    function setTreasury(address treasury_) external onlyOwner {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasuryChanged(treasury_);
    }

    function deposit(uint256 jobId) external payable onlyMarketplace {
        if (escrows[jobId].amount != 0) revert EscrowExists(jobId);
        escrows[jobId] = Escrow(uint128(msg.value), false);
        _escrowedPlusOne += msg.value;
        emit Deposited(jobId, msg.value);
    }

    function lock(uint256 jobId) external onlyMarketplace {
        Escrow storage e = escrows[jobId];
        if (e.amount == 0) revert UnknownEscrow(jobId);
        e.locked = true;
        emit Locked(jobId);
    }

    /// @notice Pay the host and the protocol fee out of a job's escrow; the rest goes back
    /// to the client. All three are credited, to be withdrawn.
    function release(uint256 jobId, address host, uint256 hostAmount, uint256 fee, address client)
        external
        onlyMarketplace
    {
        uint256 held = escrows[jobId].amount;
        if (held == 0) revert UnknownEscrow(jobId);
        if (hostAmount + fee > held) revert OverEscrow(jobId, hostAmount + fee, held);
        uint256 refundAmount = held - hostAmount - fee;
        delete escrows[jobId];
        _escrowedPlusOne -= held;
        _withdrawablePlusOne += held;
        if (hostAmount != 0) withdrawable[host] += hostAmount;
        if (fee != 0) withdrawable[treasury] += fee;
        if (refundAmount != 0) withdrawable[client] += refundAmount;
        emit Released(jobId, host, hostAmount, fee, refundAmount);
    }

    function refund(uint256 jobId, address client) external onlyMarketplace {
        uint256 held = escrows[jobId].amount;
        if (held == 0) revert UnknownEscrow(jobId);
        delete escrows[jobId];
        _escrowedPlusOne -= held;
        _withdrawablePlusOne += held;
        withdrawable[client] += held;
        emit Refunded(jobId, client, held);
    }

    function withdraw() external nonReentrant {
        uint256 amount = withdrawable[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        withdrawable[msg.sender] = 0;
        _withdrawablePlusOne -= amount;
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
        emit Withdrawn(msg.sender, amount);
    }
}
