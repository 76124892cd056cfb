// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IEscrow {
    function withdraw() external;
}

interface IMarket {
    function postJob(string calldata, bytes32, uint32, uint96, uint40, address) external payable returns (uint256);
    function refundExpired(uint256) external;
}

/// @notice Test-only: a client contract that tries to re-enter the escrow's withdraw
/// from its receive hook to take its refund twice.
contract ReentrantWithdrawer {
    IEscrow public immutable escrow;
    IMarket public immutable market;
    uint256 public reentryAttempts;
    bool public reentrySucceeded;

    constructor(IEscrow escrow_, IMarket market_) {
        escrow = escrow_;
        market = market_;
    }

    function post(string calldata modelId, uint32 maxTokens, uint96 price, uint40 deadline) external payable returns (uint256) {
        return market.postJob{value: msg.value}(modelId, bytes32(0), maxTokens, price, deadline, address(0));
    }

    function refund(uint256 jobId) external {
        market.refundExpired(jobId);
    }

    function attack() external {
        escrow.withdraw();
    }

    receive() external payable {
        if (reentryAttempts == 0) {
            reentryAttempts = 1;
            try escrow.withdraw() {
                reentrySucceeded = true;
            } catch {}
        }
    }
}
