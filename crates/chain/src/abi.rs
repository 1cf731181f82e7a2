//! The escrow's and the test token's ABI, as the contracts in `contracts/src`
//! declare it.
// The macro's generated constructors take one argument per field.
#![allow(clippy::too_many_arguments)]

alloy_sol_types::sol! {
    /// One recipient of a payee's revenue and its integer share.
    #[derive(Debug, PartialEq, Eq)]
    struct Recipient {
        address account;
        uint64 share;
    }

    /// A payee's revenue policy, bound to a channel when it opens.
    #[derive(Debug, PartialEq, Eq)]
    struct Policy {
        uint16 feeBps;
        address feeRecipient;
        Recipient[] recipients;
    }

    /// A channel as the escrow stores it (`state`: 0 none, 1 open, 2
    /// closing, 3 closed).
    #[derive(Debug, PartialEq, Eq)]
    struct ChannelRecord {
        address payer;
        uint64 expiresAt;
        uint8 state;
        address payee;
        uint64 closesAt;
        address token;
        address signer;
        uint128 deposit;
        uint128 settled;
        bytes32 policyHash;
    }

    interface IStreamWeaveEscrow {
        event ChannelOpened(
            bytes32 indexed channelId,
            address indexed payer,
            address indexed payee,
            address token,
            bytes32 salt,
            address signer,
            uint128 deposit,
            uint64 expiresAt,
            bytes32 policyHash,
            Policy policy
        );
        event ToppedUp(bytes32 indexed channelId, uint128 amount, uint128 deposit);
        event Settled(bytes32 indexed channelId, uint128 cumulativeAmount, uint128 amount);
        event Credited(bytes32 indexed channelId, address indexed token, address indexed account, uint256 amount);
        event CloseRequested(bytes32 indexed channelId, uint64 closesAt);
        event Closed(bytes32 indexed channelId, uint128 settled, uint128 refund, uint256 leftover);
        event Refunded(bytes32 indexed channelId, address indexed payer, uint128 amount, bool paid);
        event Withdrawn(address indexed token, address indexed account, address to, uint256 amount);

        function open(
            address payee,
            address token,
            uint128 deposit,
            bytes32 salt,
            address signer,
            uint64 expiresAt,
            Policy calldata policy
        ) external returns (bytes32 id);
        function topUp(bytes32 id, uint128 amount) external;
        function requestClose(bytes32 id) external;
        function settle(bytes32 id, uint128 cumulativeAmount, bytes calldata signature, Policy calldata policy) external;
        function settleMany(
            bytes32[] calldata ids,
            uint128[] calldata cumulativeAmounts,
            bytes[] calldata signatures,
            Policy[] calldata policies
        ) external;
        function close(bytes32 id, uint128 cumulativeAmount, bytes calldata signature, Policy calldata policy) external;
        function finalize(bytes32 id, Policy calldata policy) external;
        function withdraw(address token, address to) external returns (uint256 amount);
        function channel(bytes32 id) external view returns (ChannelRecord memory);
        function credits(address token, address account) external view returns (uint256);
        function owed(address token) external view returns (uint256);
        function settleWindow() external view returns (uint64);
        function policyHash(Policy calldata policy) external pure returns (bytes32);
    }

    interface IErc20 {
        function approve(address spender, uint256 amount) external returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function decimals() external view returns (uint8);
        function symbol() external view returns (string);
        /// The test token's only: open to anyone.
        function mint(address to, uint256 amount) external;
    }
}
