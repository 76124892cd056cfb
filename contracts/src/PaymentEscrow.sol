// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title PaymentEscrow
/// @notice Holds the ether of every open job until the marketplace settles it. Payouts are
/// credited to balances that their owners withdraw themselves (pull payments), so no
/// settlement ever sends ether to an address that could re-enter or refuse it.
/// @dev Created by the JobMarketplace in its constructor, which makes the marketplace an
/// immutable: the only contract that can ever deposit or settle, with no window in which
/// another could be set, and no storage read on each call. The per-job amounts live in
/// the marketplace's job records (max tokens x max price), the only source of what a job
/// may release; here we keep the totals, which bound every release and make solvency
/// checkable by anyone: balance == totalEscrowed + totalWithdrawable.
contract PaymentEscrow is Ownable, ReentrancyGuard {
    // One slot for both totals. The sentinel keeps the slot non-zero even when both
    // totals are zero: writing a zero slot back to non-zero costs 20,000 gas, and an idle
    // marketplace would pay it on the next job.
    struct Totals {
        uint120 escrowed;
        uint120 withdrawable;
        uint16 sentinel;
    }

    address public immutable marketplace;
    address public treasury;
    Totals private _totals = Totals(0, 0, 1);
    // Each account's credit plus one once it has had a credit, for the same reason: a
    // host that withdraws would otherwise pay 20,000 gas more for its next job.
    mapping(address => uint256) private _creditPlusOne;

    event Withdrawn(address indexed account, uint256 amount);
    event TreasuryChanged(address treasury);

    error NotMarketplace();
    error OverEscrow(uint256 asked, uint256 held);
    error NothingToWithdraw();
    error TransferFailed();
    error ZeroAddress();

    constructor(address owner_, address treasury_) Ownable(owner_) {
        if (treasury_ == address(0)) revert ZeroAddress();
        marketplace = msg.sender;
        treasury = treasury_;
    }

    modifier onlyMarketplace() {
        if (msg.sender != marketplace) revert NotMarketplace();
        _;
    }

    function totalEscrowed() external view returns (uint256) {
        return _totals.escrowed;
    }

    function totalWithdrawable() external view returns (uint256) {
        return _totals.withdrawable;
    }

    /// @notice What `account` may withdraw now.
    function withdrawable(address account) public view returns (uint256) {
        uint256 stored = _creditPlusOne[account];
        return stored == 0 ? 0 : stored - 1;
    }

    function setTreasury(address treasury_) external onlyOwner {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasuryChanged(treasury_);
    }

    /// @notice A job's payment, held until it is released.
    function deposit() external payable onlyMarketplace {
        _totals.escrowed += SafeCast.toUint120(msg.value);
    }

    /// @notice Settle held funds: credit the host, the protocol fee to the treasury and the
    /// rest to the client, all to be withdrawn. A refund is a release with no host share.
    function release(address host, uint256 hostAmount, uint256 fee, address client, uint256 refund)
        external
        onlyMarketplace
    {
        uint256 total = hostAmount + fee + refund;
        Totals memory t = _totals;
        if (total > t.escrowed) revert OverEscrow(total, t.escrowed);
        t.escrowed -= uint120(total);
        t.withdrawable += uint120(total);
        _totals = t;
        if (hostAmount != 0) _credit(host, hostAmount);
        if (fee != 0) _credit(treasury, fee);
        if (refund != 0) _credit(client, refund);
    }

    function _credit(address account, uint256 amount) private {
        uint256 stored = _creditPlusOne[account];
        _creditPlusOne[account] = stored == 0 ? amount + 1 : stored + amount;
    }

    function withdraw() external nonReentrant {
        uint256 amount = withdrawable(msg.sender);
        if (amount == 0) revert NothingToWithdraw();
        _creditPlusOne[msg.sender] = 1;
        _totals.withdrawable -= uint120(amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
        emit Withdrawn(msg.sender, amount);
    }
}
