// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {JobMarketplace} from "./JobMarketplace.sol";
import {NodeRegistry} from "./NodeRegistry.sol";

/// @title PaymentChannels
/// @notice Unidirectional payment channels from a payer to a host. The payer opens a
/// channel with a deposit (and may top it up); as the host works, the payer signs
/// vouchers: EIP-712 signatures of the cumulative amount the host has earned on the
/// channel. The host closes whenever it likes with the latest voucher and is paid that
/// amount, less the protocol fee fixed when the channel opened; the payer gets the rest.
/// The payer can leave alone: it starts an exit, and after the challenge period takes back
/// what no voucher claimed; until then the host may still close with its latest voucher.
/// Two transactions for a channel's whole life, whatever the number of jobs it pays for,
/// and the host can never take more than the payer signed.
/// @dev Payouts are credits their owners withdraw (pull payments), so no close sends ether
/// to an address that could re-enter or refuse it. A channel id is never reused and a
/// closed channel is never paid again, so no voucher is redeemed twice. Solvency, checkable
/// by anyone: balance == totalDeposits + totalWithdrawable.
contract PaymentChannels is EIP712, ReentrancyGuard {
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(uint256 channelId,uint256 amount)");

    // Two slots, both written at open.
    struct Channel {
        address payer; //      slot 0: 20
        uint96 deposit; //             12
        address host; //       slot 1: 20
        uint16 feeBps; //               2 (the marketplace's fee when the channel opened)
        uint40 exitAt; //               5 (0 unless the payer started an exit)
        bool closed; //                 1
    }

    JobMarketplace public immutable market;
    NodeRegistry public immutable registry;
    uint40 public immutable challengePeriod;

    uint256 public channelCount;
    uint256 public totalDeposits;
    uint256 public totalWithdrawable;
    mapping(uint256 => Channel) private _channels;
    mapping(address => uint256) public withdrawable;

    event ChannelOpened(uint256 indexed channelId, address indexed payer, address indexed host, uint256 deposit, uint16 feeBps);
    event ChannelToppedUp(uint256 indexed channelId, uint256 deposit);
    event ExitStarted(uint256 indexed channelId, uint40 exitAt);
    event ChannelClosed(uint256 indexed channelId, uint256 hostAmount, uint256 fee, uint256 refund, bool byExit);
    event Withdrawn(address indexed account, uint256 amount);

    error NoChannel(uint256 channelId);
    error ChannelClosedAlready(uint256 channelId);
    error NotPayer();
    error NotHost();
    error HostNotActive(address host);
    error ZeroDeposit();
    error Exiting(uint256 channelId);
    error NotExiting(uint256 channelId);
    error ChallengeOpen(uint40 exitAt);
    error ChallengeOver(uint40 exitAt);
    error OverDeposit(uint256 amount, uint256 deposit);
    error BadVoucher(address signer);
    error NothingToWithdraw();
    error TransferFailed();
    error DepositTooLarge();

    constructor(JobMarketplace market_, uint40 challengePeriod_) EIP712("InkMarket Channels", "1") {
        market = market_;
        registry = market_.registry();
        challengePeriod = challengePeriod_;
    }

    function getChannel(uint256 channelId) external view returns (Channel memory) {
        return _channels[channelId];
    }

    /// @notice The EIP-712 digest a payer signs for `amount` (cumulative) on `channelId`.
    function voucherDigest(uint256 channelId, uint256 amount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, amount)));
    }

    /// @notice Open a channel to `host` (active in the registry) with msg.value as deposit.
    function open(address host) external payable returns (uint256 channelId) {
        if (msg.value == 0) revert ZeroDeposit();
        if (msg.value > type(uint96).max) revert DepositTooLarge();
        if (!registry.isActive(host)) revert HostNotActive(host);
        channelId = ++channelCount;
        uint16 feeBps = market.feeBps();
        _channels[channelId] = Channel(msg.sender, uint96(msg.value), host, feeBps, 0, false);
        totalDeposits += msg.value;
        emit ChannelOpened(channelId, msg.sender, host, msg.value, feeBps);
    }

    /// @notice Add msg.value to an open channel's deposit (not once an exit has started).
    function topUp(uint256 channelId) external payable {
        Channel storage c = _open(channelId);
        if (msg.sender != c.payer) revert NotPayer();
        if (c.exitAt != 0) revert Exiting(channelId);
        if (msg.value == 0) revert ZeroDeposit();
        uint256 deposit = c.deposit + msg.value;
        if (deposit > type(uint96).max) revert DepositTooLarge();
        c.deposit = uint96(deposit);
        totalDeposits += msg.value;
        emit ChannelToppedUp(channelId, deposit);
    }

    /// @notice The host closes with the payer's voucher for `amount` (cumulative): it is
    /// credited `amount` less the fee, the treasury the fee, the payer the rest. Allowed at
    /// any time until an exit's challenge period is over.
    function close(uint256 channelId, uint256 amount, bytes calldata signature) external {
        Channel storage c = _open(channelId);
        if (msg.sender != c.host) revert NotHost();
        if (c.exitAt != 0 && block.timestamp > c.exitAt) revert ChallengeOver(c.exitAt);
        if (amount > c.deposit) revert OverDeposit(amount, c.deposit);
        address signer = ECDSA.recover(voucherDigest(channelId, amount), signature);
        if (signer != c.payer) revert BadVoucher(signer);
        _settle(channelId, c, amount, false);
    }

    /// @notice The payer leaves alone: after the challenge period it may take back the
    /// deposit with `finishExit`; until then the host can still close with a voucher.
    function startExit(uint256 channelId) external {
        Channel storage c = _open(channelId);
        if (msg.sender != c.payer) revert NotPayer();
        if (c.exitAt != 0) revert Exiting(channelId);
        uint40 exitAt = uint40(block.timestamp) + challengePeriod;
        c.exitAt = exitAt;
        emit ExitStarted(channelId, exitAt);
    }

    /// @notice After the challenge period, the whole deposit goes back to the payer: the
    /// host had its chance to close with what it was owed. Anyone may call it.
    function finishExit(uint256 channelId) external {
        Channel storage c = _open(channelId);
        if (c.exitAt == 0) revert NotExiting(channelId);
        if (block.timestamp <= c.exitAt) revert ChallengeOpen(c.exitAt);
        _settle(channelId, c, 0, true);
    }

    function withdraw() external nonReentrant {
        uint256 amount = withdrawable[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        withdrawable[msg.sender] = 0;
        totalWithdrawable -= amount;
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
        emit Withdrawn(msg.sender, amount);
    }

    function _open(uint256 channelId) private view returns (Channel storage c) {
        c = _channels[channelId];
        if (c.payer == address(0)) revert NoChannel(channelId);
        if (c.closed) revert ChannelClosedAlready(channelId);
    }

    function _settle(uint256 channelId, Channel storage c, uint256 amount, bool byExit) private {
        uint256 deposit = c.deposit;
        c.closed = true;
        uint256 fee = (amount * c.feeBps) / 10000;
        uint256 hostAmount = amount - fee;
        uint256 refund = deposit - amount;
        totalDeposits -= deposit;
        totalWithdrawable += deposit;
        if (hostAmount != 0) withdrawable[c.host] += hostAmount;
        if (fee != 0) withdrawable[market.escrow().treasury()] += fee;
        if (refund != 0) withdrawable[c.payer] += refund;
        emit ChannelClosed(channelId, hostAmount, fee, refund, byExit);
    }
}
