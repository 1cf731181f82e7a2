//! A connection to an EVM node and the escrow on it.

use std::time::Duration;

use alloy_network::eip2718::Encodable2718;
use alloy_network::{EthereumWallet, TransactionBuilder};
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_provider::{DynProvider, Provider, ProviderBuilder};
use alloy_rpc_types_eth::{BlockNumberOrTag, Filter, TransactionRequest};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolValue};
use serde::Serialize;

use crate::abi::{IErc20, IStreamWeaveEscrow as E, Policy};
use crate::{ChainError, ObservedEvent, amount128, decode_event};

/// The escrow's creation code, as forge builds `contracts/` (see
/// `scripts/contract-artifacts`).
const ESCROW_CODE: &str = include_str!("../artifacts/StreamWeaveEscrow.hex");
/// The test token's creation code.
const TEST_TOKEN_CODE: &str = include_str!("../artifacts/TestUSDC.hex");

/// How often a transaction's receipt is asked for while waiting.
const RECEIPT_POLL: Duration = Duration::from_millis(200);

fn rpc<E: std::fmt::Display>(err: E) -> ChainError {
    ChainError::Rpc(err.to_string())
}

/// A call to send: its target (or a deployment) and its input.
#[derive(Debug, Clone)]
pub struct TxCall {
    pub to: TxKind,
    pub input: Bytes,
}

impl TxCall {
    fn call<C: SolCall>(to: Address, call: C) -> TxCall {
        TxCall {
            to: TxKind::Call(to),
            input: call.abi_encode().into(),
        }
    }

    /// Settles each channel's latest voucher in one transaction.
    pub fn settle_many(escrow: Address, items: Vec<(B256, u128, Bytes, Policy)>) -> TxCall {
        let mut call = E::settleManyCall {
            ids: Vec::with_capacity(items.len()),
            cumulativeAmounts: Vec::with_capacity(items.len()),
            signatures: Vec::with_capacity(items.len()),
            policies: Vec::with_capacity(items.len()),
        };
        for (id, amount, signature, policy) in items {
            call.ids.push(id);
            call.cumulativeAmounts.push(amount);
            call.signatures.push(signature);
            call.policies.push(policy);
        }
        TxCall::call(escrow, call)
    }

    /// Closes a channel past its deadline.
    pub fn finalize(escrow: Address, id: B256, policy: Policy) -> TxCall {
        TxCall::call(escrow, E::finalizeCall { id, policy })
    }

    /// Opens a channel from the sender.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        escrow: Address,
        payee: Address,
        token: Address,
        deposit: u128,
        salt: B256,
        signer: Address,
        expires_at_s: u64,
        policy: Policy,
    ) -> TxCall {
        TxCall::call(
            escrow,
            E::openCall {
                payee,
                token,
                deposit,
                salt,
                signer,
                expiresAt: expires_at_s,
                policy,
            },
        )
    }

    /// Adds to a channel's deposit (payer).
    pub fn top_up(escrow: Address, id: B256, amount: u128) -> TxCall {
        TxCall::call(escrow, E::topUpCall { id, amount })
    }

    /// Starts the settle window (payer).
    pub fn request_close(escrow: Address, id: B256) -> TxCall {
        TxCall::call(escrow, E::requestCloseCall { id })
    }

    /// Withdraws the sender's credits in `token` to `to`.
    pub fn withdraw(escrow: Address, token: Address, to: Address) -> TxCall {
        TxCall::call(escrow, E::withdrawCall { token, to })
    }

    /// Lets `spender` take `amount` of the sender's `token`.
    pub fn approve(token: Address, spender: Address, amount: u128) -> TxCall {
        TxCall::call(
            token,
            IErc20::approveCall {
                spender,
                amount: U256::from(amount),
            },
        )
    }

    /// Mints test tokens (the test token only).
    pub fn mint(token: Address, to: Address, amount: u128) -> TxCall {
        TxCall::call(
            token,
            IErc20::mintCall {
                to,
                amount: U256::from(amount),
            },
        )
    }
}

/// A signed transaction, kept by the caller before it is sent so that a
/// restart sends the same bytes again instead of a second transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    pub hash: B256,
    pub nonce: u64,
    pub raw: Vec<u8>,
}

impl SignedTx {
    /// The signed bytes as 0x-hex, for storage.
    pub fn raw_hex(&self) -> String {
        alloy_primitives::hex::encode_prefixed(&self.raw)
    }

    /// A stored transaction again.
    pub fn from_stored(hash: B256, nonce: u64, raw_hex: &str) -> Result<SignedTx, ChainError> {
        let raw = alloy_primitives::hex::decode(raw_hex)
            .map_err(|err| ChainError::Decode(format!("stored transaction: {err}")))?;
        Ok(SignedTx { hash, nonce, raw })
    }
}

/// A mined transaction's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxOutcome {
    pub block_number: u64,
    pub success: bool,
    pub contract_address: Option<Address>,
}

/// A channel as the escrow holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnChainChannel {
    /// 0 none, 1 open, 2 closing, 3 closed.
    pub state: u8,
    pub payer: Address,
    pub payee: Address,
    pub token: Address,
    pub deposit: u128,
    pub settled: u128,
    pub expires_at_s: u64,
    pub closes_at_s: u64,
    pub policy_hash: B256,
}

/// The escrow on a node, and the key that sends transactions (if any).
#[derive(Clone)]
pub struct Escrow {
    provider: DynProvider,
    address: Address,
    chain_id: u64,
    wallet: Option<(Address, EthereumWallet)>,
}

fn parse_key(key: &str) -> Result<PrivateKeySigner, ChainError> {
    let hex = key.strip_prefix("0x").unwrap_or(key);
    let bytes = alloy_primitives::hex::decode(hex).map_err(|_| ChainError::BadKey)?;
    if bytes.len() != 32 {
        return Err(ChainError::BadKey);
    }
    PrivateKeySigner::from_slice(&bytes).map_err(|_| ChainError::BadKey)
}

impl Escrow {
    /// Connects to `rpc_url` (http or https) for the escrow at `address`;
    /// `key` (32 bytes of hex) sends transactions.
    pub async fn connect(
        rpc_url: &str,
        address: Address,
        key: Option<&str>,
    ) -> Result<Escrow, ChainError> {
        let wallet = match key {
            Some(key) => {
                let signer = parse_key(key)?;
                Some((signer.address(), EthereumWallet::from(signer)))
            }
            None => None,
        };
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect(rpc_url)
            .await
            .map_err(rpc)?
            .erased();
        let chain_id = provider.get_chain_id().await.map_err(rpc)?;
        Ok(Escrow {
            provider,
            address,
            chain_id,
            wallet,
        })
    }

    pub fn address(&self) -> Address {
        self.address
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The address transactions are sent from.
    pub fn sender(&self) -> Option<Address> {
        self.wallet.as_ref().map(|(address, _)| *address)
    }

    /// The same node and escrow, sending from another key.
    pub fn with_key(&self, key: &str) -> Result<Escrow, ChainError> {
        let signer = parse_key(key)?;
        Ok(Escrow {
            wallet: Some((signer.address(), EthereumWallet::from(signer))),
            ..self.clone()
        })
    }

    /// The newest block's number.
    pub async fn head(&self) -> Result<u64, ChainError> {
        self.provider.get_block_number().await.map_err(rpc)
    }

    /// A block's hash and timestamp, if the block exists.
    pub async fn block(&self, number: u64) -> Result<Option<(B256, u64)>, ChainError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(rpc)?;
        Ok(block.map(|b| (b.header.hash, b.header.timestamp)))
    }

    /// The escrow's events in blocks `from..=to`, in chain order.
    pub async fn events(&self, from: u64, to: u64) -> Result<Vec<ObservedEvent>, ChainError> {
        let filter = Filter::new()
            .address(self.address)
            .from_block(from)
            .to_block(to);
        let logs = self.provider.get_logs(&filter).await.map_err(rpc)?;
        let mut events = Vec::with_capacity(logs.len());
        for log in logs {
            if log.removed {
                continue;
            }
            let (Some(block_number), Some(block_hash), Some(tx_hash), Some(log_index)) = (
                log.block_number,
                log.block_hash,
                log.transaction_hash,
                log.log_index,
            ) else {
                return Err(ChainError::Decode("a log without its position".into()));
            };
            if let Some(event) = decode_event(&log.inner.data)? {
                events.push(ObservedEvent {
                    block_number,
                    block_hash,
                    tx_hash,
                    log_index,
                    event,
                });
            }
        }
        events.sort_by_key(ObservedEvent::position);
        Ok(events)
    }

    async fn view<C: SolCall>(&self, to: Address, call: C) -> Result<C::Return, ChainError> {
        let request = TransactionRequest::default()
            .with_to(to)
            .with_input(Bytes::from(call.abi_encode()));
        let output = self.provider.call(request).await.map_err(rpc)?;
        C::abi_decode_returns(&output).map_err(|err| ChainError::Decode(err.to_string()))
    }

    /// The settle window the escrow was deployed with, in seconds.
    pub async fn settle_window_s(&self) -> Result<u64, ChainError> {
        self.view(self.address, E::settleWindowCall {}).await
    }

    /// A channel's record on the escrow (state 0 when unknown).
    pub async fn channel(&self, id: B256) -> Result<OnChainChannel, ChainError> {
        let c = self.view(self.address, E::channelCall { id }).await?;
        Ok(OnChainChannel {
            state: c.state,
            payer: c.payer,
            payee: c.payee,
            token: c.token,
            deposit: c.deposit,
            settled: c.settled,
            expires_at_s: c.expiresAt,
            closes_at_s: c.closesAt,
            policy_hash: c.policyHash,
        })
    }

    /// What `account` can withdraw in `token`.
    pub async fn credits(&self, token: Address, account: Address) -> Result<u128, ChainError> {
        amount128(
            self.view(self.address, E::creditsCall { token, account })
                .await?,
        )
    }

    /// What the escrow owes in `token` (open escrow, held units, credits).
    pub async fn owed(&self, token: Address) -> Result<u128, ChainError> {
        amount128(self.view(self.address, E::owedCall { token }).await?)
    }

    /// `account`'s balance of `token`.
    pub async fn token_balance(
        &self,
        token: Address,
        account: Address,
    ) -> Result<u128, ChainError> {
        amount128(self.view(token, IErc20::balanceOfCall { account }).await?)
    }

    /// A token's symbol and decimals.
    pub async fn token_info(&self, token: Address) -> Result<(String, u8), ChainError> {
        let symbol = self.view(token, IErc20::symbolCall {}).await?;
        let decimals = self.view(token, IErc20::decimalsCall {}).await?;
        Ok((symbol, decimals))
    }

    /// The sender's transactions mined so far (its next nonce once every
    /// pending one is mined or gone).
    pub async fn mined_nonce(&self) -> Result<u64, ChainError> {
        let (sender, _) = self.wallet.as_ref().ok_or(ChainError::NoKey)?;
        self.provider
            .get_transaction_count(*sender)
            .latest()
            .await
            .map_err(rpc)
    }

    /// Signs a call with the next nonce (`nonce`, or the node's pending
    /// count), gas estimated with a margin, current fees. Nothing is sent.
    pub async fn sign(&self, call: TxCall, nonce: Option<u64>) -> Result<SignedTx, ChainError> {
        let (sender, wallet) = self.wallet.as_ref().ok_or(ChainError::NoKey)?;
        let nonce = match nonce {
            Some(nonce) => nonce,
            None => self
                .provider
                .get_transaction_count(*sender)
                .pending()
                .await
                .map_err(rpc)?,
        };
        let mut request = TransactionRequest::default()
            .with_from(*sender)
            .with_input(call.input);
        request.to = Some(call.to);
        let gas = self
            .provider
            .estimate_gas(request.clone())
            .await
            .map_err(rpc)?;
        let fees = self.provider.estimate_eip1559_fees().await.map_err(rpc)?;
        let request = request
            .with_nonce(nonce)
            .with_chain_id(self.chain_id)
            .with_gas_limit(gas.saturating_add(gas / 4))
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let envelope = request.build(wallet).await.map_err(rpc)?;
        Ok(SignedTx {
            hash: *envelope.tx_hash(),
            nonce,
            raw: envelope.encoded_2718(),
        })
    }

    /// Sends signed bytes; sending the same bytes again is harmless (a node
    /// that already has them, or mined them, is not an error here).
    pub async fn broadcast(&self, tx: &SignedTx) -> Result<(), ChainError> {
        match self.provider.send_raw_transaction(&tx.raw).await {
            Ok(_) => Ok(()),
            Err(err) => {
                let text = err.to_string().to_ascii_lowercase();
                if text.contains("already known")
                    || text.contains("already imported")
                    || text.contains("nonce too low")
                    || text.contains("already exists")
                {
                    Ok(())
                } else {
                    Err(rpc(err))
                }
            }
        }
    }

    /// A transaction's outcome once mined.
    pub async fn outcome(&self, hash: B256) -> Result<Option<TxOutcome>, ChainError> {
        let receipt = self
            .provider
            .get_transaction_receipt(hash)
            .await
            .map_err(rpc)?;
        Ok(receipt.and_then(|r| {
            Some(TxOutcome {
                block_number: r.block_number?,
                success: r.status(),
                contract_address: r.contract_address,
            })
        }))
    }

    /// Signs, sends and waits for a call to be mined; a revert is an error.
    pub async fn transact(&self, call: TxCall, wait: Duration) -> Result<TxOutcome, ChainError> {
        let tx = self.sign(call, None).await?;
        self.broadcast(&tx).await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(outcome) = self.outcome(tx.hash).await? {
                return if outcome.success {
                    Ok(outcome)
                } else {
                    Err(ChainError::Reverted(tx.hash))
                };
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ChainError::Timeout(tx.hash));
            }
            tokio::time::sleep(RECEIPT_POLL).await;
        }
    }

    /// Sends a raw JSON-RPC request (node-specific methods such as anvil's).
    pub async fn raw_request(
        &self,
        method: &'static str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, ChainError> {
        self.provider
            .raw_request(method.into(), params)
            .await
            .map_err(rpc)
    }
}

/// What `deploy` put on chain, printed as one JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Deployment {
    pub chain_id: u64,
    pub escrow: Address,
    pub token: Address,
}

/// Deploys a test token (6 decimals, open `mint`) and an escrow with a
/// settle window of `settle_window_s`, from `key`.
pub async fn deploy(
    rpc_url: &str,
    key: &str,
    settle_window_s: u64,
) -> Result<Deployment, ChainError> {
    let deployer = Escrow::connect(rpc_url, Address::ZERO, Some(key)).await?;
    let code = |hex: &str| {
        alloy_primitives::hex::decode(hex.trim()).map_err(|err| ChainError::Decode(err.to_string()))
    };
    let wait = Duration::from_secs(120);
    let token = deployer
        .transact(
            TxCall {
                to: TxKind::Create,
                input: code(TEST_TOKEN_CODE)?.into(),
            },
            wait,
        )
        .await?
        .contract_address
        .ok_or_else(|| ChainError::Decode("no contract address".into()))?;
    let mut escrow_code = code(ESCROW_CODE)?;
    escrow_code.extend_from_slice(&settle_window_s.abi_encode());
    let escrow = deployer
        .transact(
            TxCall {
                to: TxKind::Create,
                input: escrow_code.into(),
            },
            wait,
        )
        .await?
        .contract_address
        .ok_or_else(|| ChainError::Decode("no contract address".into()))?;
    Ok(Deployment {
        chain_id: deployer.chain_id,
        escrow,
        token,
    })
}
