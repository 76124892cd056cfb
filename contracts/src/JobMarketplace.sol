// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {NodeRegistry} from "./NodeRegistry.sol";
import {PaymentEscrow} from "./PaymentEscrow.sol";

/// @title JobMarketplace
/// @notice A client posts a job with its worst-case payment (max tokens x max price per
/// token) escrowed; a registered host claims it at its registered price, submits the hash
/// of the result and the tokens used; the client accepts, or anyone finalizes after the
/// dispute window; the host is paid for the tokens used, less the protocol fee, and the
/// client gets the rest back. Jobs that run past their deadline are refunded in full.
/// Either party may dispute a submitted result inside the dispute window; the arbitrator
/// (its own key) has until the arbitration deadline to settle it, and after that anyone
/// may expire the dispute, which settles as if the submitted result stood: no escrow stays
/// locked for ever, and the arbitrator's silence is never evidence against the host.
contract JobMarketplace is AccessControl {
    bytes32 public constant ARBITRATOR_ROLE = keccak256("ARBITRATOR_ROLE");
    uint16 public constant MAX_FEE_BPS = 2000;
    // The longest an admin may give the arbitrator: a dispute ends within this, whatever
    // the setting, so no escrow and no stake is held for longer.
    uint40 public constant MAX_ARBITRATION_WINDOW = 30 days;

    enum State {
        None,
        Posted,
        Claimed,
        Submitted,
        Completed,
        Disputed,
        Resolved,
        Refunded,
        Cancelled
    }

    // Three storage slots, laid out by when they are written, so that posting a job
    // creates two and claiming it the third (each new slot costs 22,100 gas). The prompt
    // hash and the result hash are committed in the JobPosted and ResultSubmitted events
    // (permanent, and 8 gas a byte instead of 20,000 a slot). The model is kept as the
    // first 8 bytes of its key and the claiming host names the model, which is checked
    // against it. The fee and the dispute window are fixed when the job is posted and
    // when its result is submitted, so a later change of either never alters agreed terms.
    // Once a job is disputed, `disputeUntil` holds the arbitration deadline instead: the
    // dispute window is over by then, and reusing the bytes keeps a job at three slots.
    struct Job {
        address client; //          slot 0, at post: 20 bytes
        uint32 maxTokens; //                          4
        uint40 deadline; //                           5
        State state; //                               1
        uint16 feeBps; //                             2
        uint96 maxPricePerToken; // slot 1, at post: 12
        bytes8 modelTag; //                           8
        uint96 price; //                   at claim: 12
        address host; //            slot 2, at claim (at post when assigned): 20
        uint32 tokensUsed; //              at submit: 4
        uint40 disputeUntil; //                       5 (the arbitration deadline once Disputed)
    }

    NodeRegistry public immutable registry;
    PaymentEscrow public immutable escrow;
    uint16 public feeBps;
    uint40 public disputeWindow;
    // In the same slot as the fee and the dispute window, which every job reads anyway.
    uint40 public arbitrationWindow;
    uint256 public nextJobId = 1;
    mapping(uint256 => Job) private _jobs;

    event JobPosted(
        uint256 indexed jobId,
        address indexed client,
        bytes32 indexed modelKey,
        string modelId,
        bytes32 promptHash,
        uint32 maxTokens,
        uint96 maxPricePerToken,
        uint40 deadline,
        address assignedHost
    );
    event JobClaimed(uint256 indexed jobId, address indexed host, uint96 price);
    event ResultSubmitted(uint256 indexed jobId, address indexed host, bytes32 resultHash, string cid, uint32 tokensUsed);
    event JobCompleted(uint256 indexed jobId, address indexed host, uint256 hostAmount, uint256 fee, uint256 refund);
    event JobDisputed(uint256 indexed jobId, address indexed by, string reason, uint40 arbitrationDeadline);
    event DisputeResolved(
        uint256 indexed jobId, uint16 hostShareBps, uint256 hostAmount, uint256 fee, uint256 refund, uint256 slashed
    );
    event DisputeExpired(uint256 indexed jobId, uint256 hostAmount, uint256 fee, uint256 refund);
    event JobRefunded(uint256 indexed jobId, address indexed client, uint256 amount, bool hostFailed);
    event JobCancelled(uint256 indexed jobId, address indexed client, uint256 amount);
    event FeeChanged(uint16 feeBps);
    event DisputeWindowChanged(uint40 disputeWindow);
    event ArbitrationWindowChanged(uint40 arbitrationWindow);

    error AccountBlocked(address account);
    error WrongPayment(uint256 sent, uint256 expected);
    error BadTerms();
    error WrongState(uint256 jobId, State state);
    error NotClient(uint256 jobId);
    error NotHost(uint256 jobId);
    error NotServing(uint256 jobId, address host);
    error WrongModel(uint256 jobId);
    error PriceTooHigh(uint256 price, uint256 maxPrice);
    error DeadlinePassed(uint256 jobId);
    error DeadlineNotPassed(uint256 jobId);
    error TooManyTokens(uint32 used, uint32 maxTokens);
    error DisputeWindowOpen(uint256 jobId);
    error DisputeWindowClosed(uint256 jobId);
    error FeeTooHigh(uint16 feeBps);
    error BadShare(uint16 shareBps);
    error NotParty(uint256 jobId);
    error ArbitrationOpen(uint256 jobId);
    error ArbitrationClosed(uint256 jobId);
    error ZeroAddress();
    error ArbitrationWindowTooLong(uint40 arbitrationWindow);

    /// @param arbitrator Resolves disputes: its own key, never the admin's or a paying wallet's.
    /// @param treasury Receives the protocol fees, credited in the escrow this creates.
    constructor(
        address admin,
        address arbitrator,
        NodeRegistry registry_,
        address treasury,
        uint16 feeBps_,
        uint40 disputeWindow_,
        uint40 arbitrationWindow_
    ) {
        if (feeBps_ > MAX_FEE_BPS) revert FeeTooHigh(feeBps_);
        if (arbitrator == address(0)) revert ZeroAddress();
        if (arbitrationWindow_ > MAX_ARBITRATION_WINDOW) revert ArbitrationWindowTooLong(arbitrationWindow_);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(ARBITRATOR_ROLE, arbitrator);
        registry = registry_;
        escrow = new PaymentEscrow(admin, treasury);
        feeBps = feeBps_;
        disputeWindow = disputeWindow_;
        arbitrationWindow = arbitrationWindow_;
    }

    // ---- client ---------------------------------------------------------------------

    function postJob(
        string calldata modelId,
        bytes32 promptHash,
        uint32 maxTokens,
        uint96 maxPricePerToken,
        uint40 deadline,
        address assignedHost
    ) external payable returns (uint256 jobId) {
        if (registry.blocked(msg.sender)) revert AccountBlocked(msg.sender);
        if (maxTokens == 0 || maxPricePerToken == 0 || deadline <= block.timestamp) revert BadTerms();
        uint256 expected = uint256(maxTokens) * maxPricePerToken;
        if (msg.value != expected) revert WrongPayment(msg.value, expected);
        jobId = nextJobId++;
        bytes32 modelKey = keccak256(bytes(modelId));
        Job storage j = _jobs[jobId];
        j.client = msg.sender;
        j.maxTokens = maxTokens;
        j.deadline = deadline;
        j.state = State.Posted;
        j.feeBps = feeBps;
        j.maxPricePerToken = maxPricePerToken;
        j.modelTag = bytes8(modelKey);
        if (assignedHost != address(0)) j.host = assignedHost;
        escrow.deposit{value: msg.value}();
        emit JobPosted(jobId, msg.sender, modelKey, modelId, promptHash, maxTokens, maxPricePerToken, deadline, assignedHost);
    }

    /// @notice Take back a job that no host has claimed yet.
    function cancelJob(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        if (j.state != State.Posted) revert WrongState(jobId, j.state);
        if (msg.sender != j.client) revert NotClient(jobId);
        j.state = State.Cancelled;
        uint256 amount = _held(j);
        escrow.release(address(0), 0, 0, msg.sender, amount);
        emit JobCancelled(jobId, msg.sender, amount);
    }

    function acceptResult(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        if (j.state != State.Submitted) revert WrongState(jobId, j.state);
        if (msg.sender != j.client) revert NotClient(jobId);
        _complete(jobId, j);
    }

    // ---- either party ---------------------------------------------------------------

    /// @notice Send a submitted result to the arbitrator, inside the dispute window: the
    /// client (the result is wrong) or the host (it wants a verdict on record). The host's
    /// stake stays until the dispute ends; the arbitrator has until the arbitration
    /// deadline, fixed now, so a later change of the setting never alters an open dispute.
    function disputeJob(uint256 jobId, string calldata reason) external {
        Job storage j = _jobs[jobId];
        if (j.state != State.Submitted) revert WrongState(jobId, j.state);
        address host = j.host;
        if (msg.sender != j.client && msg.sender != host) revert NotParty(jobId);
        if (block.timestamp > j.disputeUntil) revert DisputeWindowClosed(jobId);
        uint40 arbitrationDeadline = uint40(block.timestamp) + arbitrationWindow;
        j.state = State.Disputed;
        j.disputeUntil = arbitrationDeadline;
        registry.recordDisputed(host);
        emit JobDisputed(jobId, msg.sender, reason, arbitrationDeadline);
    }

    // ---- host -----------------------------------------------------------------------

    function claimJob(uint256 jobId, string calldata modelId) external {
        Job storage j = _jobs[jobId];
        if (j.state != State.Posted) revert WrongState(jobId, j.state);
        if (block.timestamp > j.deadline) revert DeadlinePassed(jobId);
        address assigned = j.host;
        if (assigned != address(0) && assigned != msg.sender) revert NotHost(jobId);
        bytes32 modelKey = keccak256(bytes(modelId));
        if (bytes8(modelKey) != j.modelTag) revert WrongModel(jobId);
        uint256 price = registry.activePrice(msg.sender, modelKey);
        if (price == 0) revert NotServing(jobId, msg.sender);
        if (price > j.maxPricePerToken) revert PriceTooHigh(price, j.maxPricePerToken);
        // Claimed is the lock: from here the client can get the escrow back only through
        // the deadline (refundExpired) or a dispute, and the host is paid only on completion.
        j.state = State.Claimed;
        j.price = uint96(price);
        if (assigned == address(0)) j.host = msg.sender;
        emit JobClaimed(jobId, msg.sender, uint96(price));
    }

    function submitResult(uint256 jobId, bytes32 resultHash, string calldata cid, uint32 tokensUsed) external {
        Job storage j = _jobs[jobId];
        if (j.state != State.Claimed) revert WrongState(jobId, j.state);
        if (msg.sender != j.host) revert NotHost(jobId);
        if (block.timestamp > j.deadline) revert DeadlinePassed(jobId);
        if (tokensUsed > j.maxTokens) revert TooManyTokens(tokensUsed, j.maxTokens);
        j.state = State.Submitted;
        j.tokensUsed = tokensUsed;
        j.disputeUntil = uint40(block.timestamp) + disputeWindow;
        emit ResultSubmitted(jobId, msg.sender, resultHash, cid, tokensUsed);
    }

    // ---- anyone ---------------------------------------------------------------------

    /// @notice Complete a submitted job whose dispute window has closed.
    function finalize(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        if (j.state != State.Submitted) revert WrongState(jobId, j.state);
        if (block.timestamp <= j.disputeUntil) revert DisputeWindowOpen(jobId);
        _complete(jobId, j);
    }

    /// @notice Refund a job that nobody claimed, or whose host delivered no result, by its
    /// deadline. A host that claimed and went silent is counted as failed.
    function refundExpired(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        State s = j.state;
        if (s != State.Posted && s != State.Claimed) revert WrongState(jobId, s);
        if (block.timestamp <= j.deadline) revert DeadlineNotPassed(jobId);
        j.state = State.Refunded;
        bool hostFailed = s == State.Claimed;
        if (hostFailed) registry.recordFailed(j.host);
        uint256 amount = _held(j);
        escrow.release(address(0), 0, 0, j.client, amount);
        emit JobRefunded(jobId, j.client, amount, hostFailed);
    }

    /// @notice End a dispute the arbitrator left unresolved past its deadline, as if the
    /// submitted result stood: the host is paid for the tokens it reported, less the fee,
    /// and the client gets the rest. Silence is no evidence against the host; a client that
    /// could have its escrow back by waiting would have a reason to dispute every job.
    function expireDispute(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        if (j.state != State.Disputed) revert WrongState(jobId, j.state);
        if (block.timestamp <= j.disputeUntil) revert ArbitrationOpen(jobId);
        uint256 payment = uint256(j.tokensUsed) * j.price;
        uint256 fee = (payment * j.feeBps) / 10000;
        uint256 refund = _held(j) - payment;
        address host = j.host;
        j.state = State.Resolved;
        escrow.release(host, payment - fee, fee, j.client, refund);
        registry.recordDisputeResolved(host, 0);
        emit DisputeExpired(jobId, payment - fee, fee, refund);
    }

    // ---- arbitrator -----------------------------------------------------------------

    /// @notice Settle a dispute before its deadline: the host gets `hostShareBps` of what the
    /// result would have earned (10000 pays in full, 0 refunds the client in full), less the
    /// protocol fee, and loses `slashAmount` of its stake to the treasury (the client is made
    /// whole by the refund; a slash is a penalty, not a prize for disputing).
    function resolveDispute(uint256 jobId, uint16 hostShareBps, uint256 slashAmount)
        external
        onlyRole(ARBITRATOR_ROLE)
    {
        Job storage j = _jobs[jobId];
        if (j.state != State.Disputed) revert WrongState(jobId, j.state);
        // The deadline binds the arbitrator too: once it has passed, the dispute is the
        // host's to expire, and a late verdict cannot race it.
        if (block.timestamp > j.disputeUntil) revert ArbitrationClosed(jobId);
        if (hostShareBps > 10000) revert BadShare(hostShareBps);
        uint256 payment = (uint256(j.tokensUsed) * j.price * hostShareBps) / 10000;
        uint256 fee = (payment * j.feeBps) / 10000;
        uint256 refund = _held(j) - payment;
        address host = j.host;
        j.state = State.Resolved;
        escrow.release(host, payment - fee, fee, j.client, refund);
        registry.recordDisputeResolved(host, slashAmount);
        emit DisputeResolved(jobId, hostShareBps, payment - fee, fee, refund, slashAmount);
    }

    // ---- administration -------------------------------------------------------------

    /// @notice The fee for jobs posted from now on; posted jobs keep theirs.
    function setFeeBps(uint16 feeBps_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (feeBps_ > MAX_FEE_BPS) revert FeeTooHigh(feeBps_);
        feeBps = feeBps_;
        emit FeeChanged(feeBps_);
    }

    /// @notice The dispute window for results submitted from now on.
    function setDisputeWindow(uint40 disputeWindow_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        disputeWindow = disputeWindow_;
        emit DisputeWindowChanged(disputeWindow_);
    }

    /// @notice The time the arbitrator has for disputes opened from now on.
    function setArbitrationWindow(uint40 arbitrationWindow_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (arbitrationWindow_ > MAX_ARBITRATION_WINDOW) revert ArbitrationWindowTooLong(arbitrationWindow_);
        arbitrationWindow = arbitrationWindow_;
        emit ArbitrationWindowChanged(arbitrationWindow_);
    }

    // ---- reads ----------------------------------------------------------------------

    function getJob(uint256 jobId) external view returns (Job memory) {
        return _jobs[jobId];
    }

    function _held(Job storage j) private view returns (uint256) {
        return uint256(j.maxTokens) * j.maxPricePerToken;
    }

    function _complete(uint256 jobId, Job storage j) private {
        // tokensUsed <= maxTokens and price <= maxPricePerToken, so payment <= the escrow.
        uint256 payment = uint256(j.tokensUsed) * j.price;
        uint256 fee = (payment * j.feeBps) / 10000;
        uint256 refund = _held(j) - payment;
        address host = j.host;
        j.state = State.Completed;
        escrow.release(host, payment - fee, fee, j.client, refund);
        registry.recordCompleted(host);
        emit JobCompleted(jobId, host, payment - fee, fee, refund);
    }
}
