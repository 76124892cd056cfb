// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title NodeRegistry
/// @notice Host nodes stake to be listed with their API URL, metadata, models and a price
/// per token for each model. Reputation counters are written only by the marketplace;
/// the arbitrator may slash a stake; the owner keeps a blocklist. A node's record, and so
/// its reputation, outlives its stake: leaving and registering again starts from the same
/// counters, so a bad record cannot be washed off by re-registering. A host with a dispute
/// open against it cannot withdraw its stake: the stake is what the arbitrator may slash.
/// A model id names exact weights: the admin approves it with the sha256 of its GGUF file,
/// and a node may list only approved models (hosts check the file they load against it).
contract NodeRegistry is AccessControl, ReentrancyGuard {
    bytes32 public constant MARKETPLACE_ROLE = keccak256("MARKETPLACE_ROLE");
    bytes32 public constant ARBITRATOR_ROLE = keccak256("ARBITRATOR_ROLE");

    // The open disputes share the second slot with the failed and disputed counters, which
    // are written by the same calls, so counting them adds no storage slot.
    struct Node {
        uint128 stake; //                  slot 0
        uint40 registeredAt;
        uint40 unregisterRequestedAt;
        bool active;
        uint32 completed;
        uint32 failed; //                  slot 1
        uint32 disputed;
        uint32 openDisputes;
        string apiUrl;
        string metadata;
    }

    uint256 public minStake;
    uint256 public cooldown;
    address public treasury;
    uint256 public slashedBalance;

    mapping(address => Node) private _nodes;
    mapping(address => bytes32[]) private _nodeModels;
    mapping(address => mapping(bytes32 => uint256)) public priceOf;
    mapping(bytes32 => address[]) private _modelNodes;
    mapping(bytes32 => mapping(address => uint256)) private _modelIndex; // position + 1
    mapping(address => bool) public blocked;
    // The sha256 of each approved model's GGUF file, by model key; zero when not approved.
    mapping(bytes32 => bytes32) private _modelHashes;

    event NodeRegistered(address indexed node, string apiUrl, string metadata, uint256 stake);
    event NodeUpdated(address indexed node, string apiUrl, string metadata);
    event ModelPriced(address indexed node, bytes32 indexed modelKey, string modelId, uint256 pricePerToken);
    event ModelRemoved(address indexed node, bytes32 indexed modelKey);
    event StakeAdded(address indexed node, uint256 amount, uint256 stake);
    event UnregisterRequested(address indexed node, uint256 availableAt);
    event StakeWithdrawn(address indexed node, uint256 amount);
    event ReputationChanged(address indexed node, uint32 completed, uint32 failed, uint32 disputed);
    event Slashed(address indexed node, uint256 amount, string reason);
    event BlockedChanged(address indexed account, bool blocked);
    event MinStakeChanged(uint256 minStake);
    event TreasuryChanged(address treasury);
    event ModelApproved(bytes32 indexed modelKey, string modelId, bytes32 sha256OfGguf);
    event ModelRevoked(bytes32 indexed modelKey, string modelId);

    error StakeTooLow(uint256 sent, uint256 minimum);
    error AlreadyRegistered();
    error NotRegistered();
    error AccountBlocked(address account);
    error LengthMismatch();
    error NoModels();
    error ZeroPrice();
    error CooldownNotOver(uint256 availableAt);
    error UnregisterNotRequested();
    error DisputesOpen(uint32 openDisputes);
    error TransferFailed();
    error SlashTooLarge(uint256 amount, uint256 stake);
    error ZeroAddress();
    error ModelNotApproved(string modelId);
    error ModelHashTaken(string modelId, bytes32 sha256OfGguf);
    error ZeroHash();

    /// @param arbitrator Slashes stakes; its own key, never the admin's or a paying wallet's.
    constructor(address admin, address arbitrator, address treasury_, uint256 minStake_, uint256 cooldown_) {
        if (treasury_ == address(0) || arbitrator == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(ARBITRATOR_ROLE, arbitrator);
        treasury = treasury_;
        minStake = minStake_;
        cooldown = cooldown_;
    }

    // ---- registration ---------------------------------------------------------------

    function register(
        string calldata apiUrl,
        string calldata metadata,
        string[] calldata modelIds,
        uint256[] calldata prices
    ) external payable {
        if (blocked[msg.sender]) revert AccountBlocked(msg.sender);
        Node storage n = _nodes[msg.sender];
        // A node that is listed, or still has a stake (leaving, or slashed below the
        // minimum), comes back through update().
        if (n.active || n.stake != 0) revert AlreadyRegistered();
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);
        n.stake = SafeCast.toUint128(msg.value);
        if (n.registeredAt == 0) n.registeredAt = uint40(block.timestamp);
        n.unregisterRequestedAt = 0;
        n.active = true;
        n.apiUrl = apiUrl;
        n.metadata = metadata;
        emit NodeRegistered(msg.sender, apiUrl, metadata, msg.value);
        _setModels(msg.sender, modelIds, prices);
    }

    /// @notice Change the URL, metadata, models and prices; the stake may be topped up.
    /// Re-activates a node that had asked to leave.
    function update(
        string calldata apiUrl,
        string calldata metadata,
        string[] calldata modelIds,
        uint256[] calldata prices
    ) external payable {
        if (blocked[msg.sender]) revert AccountBlocked(msg.sender);
        Node storage n = _nodes[msg.sender];
        if (n.registeredAt == 0) revert NotRegistered();
        if (msg.value != 0) {
            n.stake += SafeCast.toUint128(msg.value);
            emit StakeAdded(msg.sender, msg.value, n.stake);
        }
        if (n.stake < minStake) revert StakeTooLow(n.stake, minStake);
        n.apiUrl = apiUrl;
        n.metadata = metadata;
        n.active = true;
        n.unregisterRequestedAt = 0;
        emit NodeUpdated(msg.sender, apiUrl, metadata);
        _clearModels(msg.sender);
        _setModels(msg.sender, modelIds, prices);
    }

    function requestUnregister() external {
        Node storage n = _nodes[msg.sender];
        if (n.stake == 0) revert NotRegistered();
        n.active = false;
        n.unregisterRequestedAt = uint40(block.timestamp);
        _clearModels(msg.sender);
        emit UnregisterRequested(msg.sender, block.timestamp + cooldown);
    }

    function withdrawStake() external nonReentrant {
        Node storage n = _nodes[msg.sender];
        if (n.registeredAt == 0) revert NotRegistered();
        if (n.unregisterRequestedAt == 0) revert UnregisterNotRequested();
        // Otherwise a host could serve junk, wait out the cooldown while the client's
        // dispute is open, and leave with the stake before the arbitrator can slash it.
        if (n.openDisputes != 0) revert DisputesOpen(n.openDisputes);
        uint256 availableAt = uint256(n.unregisterRequestedAt) + cooldown;
        if (block.timestamp < availableAt) revert CooldownNotOver(availableAt);
        uint256 amount = n.stake;
        n.stake = 0;
        n.unregisterRequestedAt = 0;
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
        emit StakeWithdrawn(msg.sender, amount);
    }

    function _setModels(address node, string[] calldata modelIds, uint256[] calldata prices) private {
        if (modelIds.length != prices.length) revert LengthMismatch();
        if (modelIds.length == 0) revert NoModels();
        for (uint256 i = 0; i < modelIds.length; i++) {
            if (prices[i] == 0) revert ZeroPrice();
            bytes32 key = keccak256(bytes(modelIds[i]));
            if (_modelHashes[key] == 0) revert ModelNotApproved(modelIds[i]);
            if (priceOf[node][key] == 0) {
                _nodeModels[node].push(key);
                _modelNodes[key].push(node);
                _modelIndex[key][node] = _modelNodes[key].length;
            }
            priceOf[node][key] = prices[i];
            emit ModelPriced(node, key, modelIds[i], prices[i]);
        }
    }

    function _clearModels(address node) private {
        bytes32[] storage keys = _nodeModels[node];
        for (uint256 i = 0; i < keys.length; i++) {
            bytes32 key = keys[i];
            delete priceOf[node][key];
            uint256 pos = _modelIndex[key][node];
            address[] storage list = _modelNodes[key];
            address last = list[list.length - 1];
            list[pos - 1] = last;
            _modelIndex[key][last] = pos;
            list.pop();
            delete _modelIndex[key][node];
            emit ModelRemoved(node, key);
        }
        delete _nodeModels[node];
    }

    // ---- reads ----------------------------------------------------------------------

    function getNode(address node) external view returns (Node memory) {
        return _nodes[node];
    }

    function modelsOf(address node) external view returns (bytes32[] memory) {
        return _nodeModels[node];
    }

    function isActive(address node) public view returns (bool) {
        return _nodes[node].active && !blocked[node];
    }

    /// @notice The node's price for a model, or 0 when it is not active, does not serve it,
    /// or the model is no longer approved (a revoked model cannot be claimed).
    function activePrice(address node, bytes32 modelKey) external view returns (uint256) {
        if (!isActive(node) || _modelHashes[modelKey] == 0) return 0;
        return priceOf[node][modelKey];
    }

    /// @notice The sha256 of the GGUF file `modelId` names, or zero when it is not approved.
    function modelHash(string calldata modelId) external view returns (bytes32) {
        return _modelHashes[keccak256(bytes(modelId))];
    }

    /// @notice The nodes listing `modelId`; none while the model is not approved.
    function activeNodesForModel(string calldata modelId) external view returns (address[] memory) {
        bytes32 modelKey = keccak256(bytes(modelId));
        if (_modelHashes[modelKey] == 0) return new address[](0);
        address[] storage all = _modelNodes[modelKey];
        uint256 count;
        for (uint256 i = 0; i < all.length; i++) {
            if (!blocked[all[i]]) count++;
        }
        address[] memory out = new address[](count);
        uint256 j;
        for (uint256 i = 0; i < all.length; i++) {
            if (!blocked[all[i]]) out[j++] = all[i];
        }
        return out;
    }

    // ---- reputation (marketplace only) and slashing (arbitrator) ------------------------

    function recordCompleted(address node) external onlyRole(MARKETPLACE_ROLE) {
        Node storage n = _nodes[node];
        n.completed += 1;
        emit ReputationChanged(node, n.completed, n.failed, n.disputed);
    }

    function recordFailed(address node) external onlyRole(MARKETPLACE_ROLE) {
        Node storage n = _nodes[node];
        n.failed += 1;
        emit ReputationChanged(node, n.completed, n.failed, n.disputed);
    }

    /// @notice A dispute against `node` was opened: it counts against its reputation, and
    /// its stake stays until every open dispute is resolved.
    function recordDisputed(address node) external onlyRole(MARKETPLACE_ROLE) {
        Node storage n = _nodes[node];
        n.disputed += 1;
        n.openDisputes += 1;
        emit ReputationChanged(node, n.completed, n.failed, n.disputed);
    }

    /// @notice A dispute against `node` ended, resolved by the arbitrator or expired (it
    /// stays in `disputed`); `slashAmount` of its stake goes to the treasury. The slash comes
    /// first, so the stake it frees is already the smaller one.
    function recordDisputeResolved(address node, uint256 slashAmount) external onlyRole(MARKETPLACE_ROLE) {
        if (slashAmount != 0) _slash(node, slashAmount, "dispute");
        _nodes[node].openDisputes -= 1;
    }

    function slash(address node, uint256 amount, string calldata reason) external onlyRole(ARBITRATOR_ROLE) {
        _slash(node, amount, reason);
    }

    function _slash(address node, uint256 amount, string memory reason) private {
        Node storage n = _nodes[node];
        if (n.registeredAt == 0) revert NotRegistered();
        if (amount > n.stake) revert SlashTooLarge(amount, n.stake);
        n.stake -= uint128(amount);
        slashedBalance += amount;
        if (n.stake < minStake) {
            n.active = false;
            _clearModels(node);
        }
        emit Slashed(node, amount, reason);
    }

    /// @notice Slashed stakes go to the treasury, which withdraws them (pull payment).
    function withdrawSlashed() external nonReentrant {
        uint256 amount = slashedBalance;
        slashedBalance = 0;
        (bool ok,) = treasury.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    // ---- administration -----------------------------------------------------------------

    function setBlocked(address account, bool isBlocked) external onlyRole(DEFAULT_ADMIN_ROLE) {
        blocked[account] = isBlocked;
        emit BlockedChanged(account, isBlocked);
    }

    function setTreasury(address treasury_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasuryChanged(treasury_);
    }

    /// @notice Approve `modelId` as the GGUF file whose sha256 is `sha256OfGguf`. A model id
    /// names one file: to point it at other weights, revoke it first (which delists it).
    function approveModel(string calldata modelId, bytes32 sha256OfGguf) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (sha256OfGguf == 0) revert ZeroHash();
        bytes32 modelKey = keccak256(bytes(modelId));
        bytes32 current = _modelHashes[modelKey];
        if (current != 0 && current != sha256OfGguf) revert ModelHashTaken(modelId, current);
        _modelHashes[modelKey] = sha256OfGguf;
        emit ModelApproved(modelKey, modelId, sha256OfGguf);
    }

    /// @notice Withdraw approval: nodes can no longer list `modelId`, are not returned for
    /// it, and jobs for it can no longer be claimed. Jobs already claimed run their course.
    function revokeModel(string calldata modelId) external onlyRole(DEFAULT_ADMIN_ROLE) {
        bytes32 modelKey = keccak256(bytes(modelId));
        if (_modelHashes[modelKey] == 0) revert ModelNotApproved(modelId);
        delete _modelHashes[modelKey];
        emit ModelRevoked(modelKey, modelId);
    }

    function setMinStake(uint256 minStake_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        minStake = minStake_;
        emit MinStakeChanged(minStake_);
    }
}
