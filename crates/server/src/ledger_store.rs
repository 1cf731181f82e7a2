//! The ledger's storage trait, and the store the server runs on: SQLite
//! (embedded default) or PostgreSQL (`--database postgres://...`).

use streamweave_ledger::{AccountRef, Address, Channel, RevenuePolicy, Transfer};

use crate::ledger_db::{LedgerBatch, Refusal, SqliteLedger, StoredTransfer};
use crate::ledger_pg::PgLedger;

/// What the payments engine and the API need from storage. Every
/// implementation passes the same suite (`tests/ledger_store.rs`).
#[allow(async_fn_in_trait)]
pub trait LedgerStore {
    /// Commits batches in one durable transaction; each batch all-or-nothing.
    async fn commit(
        &self,
        batches: &[LedgerBatch],
        now_ms: i64,
    ) -> Result<Vec<Result<(), Refusal>>, sqlx::Error>;
    async fn channels(&self) -> Result<Vec<Channel>, sqlx::Error>;
    async fn all_transfers(&self) -> Result<Vec<Transfer>, sqlx::Error>;
    async fn stored_balances(&self) -> Result<Vec<(String, i128)>, sqlx::Error>;
    async fn balance(&self, account: &AccountRef) -> Result<i128, sqlx::Error>;
    async fn transfers_of(
        &self,
        owner: Address,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredTransfer>, sqlx::Error>;
    async fn policy(&self, owner: Address) -> Result<Option<RevenuePolicy>, sqlx::Error>;
    async fn set_policy(
        &self,
        owner: Address,
        policy: &RevenuePolicy,
        now_ms: i64,
    ) -> Result<(), sqlx::Error>;
    async fn record_withdrawal(
        &self,
        id: &str,
        owner: Address,
        asset: Address,
        amount: u128,
        now_ms: i64,
    ) -> Result<(), sqlx::Error>;
    async fn insert_challenge(
        &self,
        nonce: &str,
        address: Address,
        message: &str,
        expires_at_ms: i64,
    ) -> Result<(), sqlx::Error>;
    async fn take_challenge(&self, nonce: &str) -> Result<Option<(String, i64)>, sqlx::Error>;
    async fn insert_token(
        &self,
        token_hash: &str,
        address: Address,
        expires_at_ms: i64,
    ) -> Result<(), sqlx::Error>;
    async fn token_address(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<Address>, sqlx::Error>;
    async fn revoke_token(&self, token_hash: &str) -> Result<(), sqlx::Error>;
    /// Sets (or with `None` clears) an account's automatic payout threshold.
    async fn set_payout_threshold(
        &self,
        owner: Address,
        threshold: Option<u128>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error>;
    /// Every account's payout threshold.
    async fn payout_thresholds(&self) -> Result<Vec<(Address, u128)>, sqlx::Error>;
}

/// The configured store.
#[derive(Clone)]
pub enum LedgerDb {
    Sqlite(SqliteLedger),
    Postgres(PgLedger),
}

impl LedgerDb {
    /// The SQLite store on an open pool.
    pub fn new(pool: sqlx::SqlitePool) -> Self {
        LedgerDb::Sqlite(SqliteLedger::new(pool))
    }

    /// Connects to PostgreSQL and migrates.
    pub async fn postgres(url: &str) -> anyhow::Result<Self> {
        Ok(LedgerDb::Postgres(PgLedger::connect(url).await?))
    }
}

macro_rules! delegate {
    ($self:ident, $method:ident ( $($arg:expr),* )) => {
        match $self {
            LedgerDb::Sqlite(store) => store.$method($($arg),*).await,
            LedgerDb::Postgres(store) => store.$method($($arg),*).await,
        }
    };
}

impl LedgerStore for LedgerDb {
    async fn commit(
        &self,
        batches: &[LedgerBatch],
        now_ms: i64,
    ) -> Result<Vec<Result<(), Refusal>>, sqlx::Error> {
        delegate!(self, commit(batches, now_ms))
    }
    async fn channels(&self) -> Result<Vec<Channel>, sqlx::Error> {
        delegate!(self, channels())
    }
    async fn all_transfers(&self) -> Result<Vec<Transfer>, sqlx::Error> {
        delegate!(self, all_transfers())
    }
    async fn stored_balances(&self) -> Result<Vec<(String, i128)>, sqlx::Error> {
        delegate!(self, stored_balances())
    }
    async fn balance(&self, account: &AccountRef) -> Result<i128, sqlx::Error> {
        delegate!(self, balance(account))
    }
    async fn transfers_of(
        &self,
        owner: Address,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredTransfer>, sqlx::Error> {
        delegate!(self, transfers_of(owner, before_seq, limit))
    }
    async fn policy(&self, owner: Address) -> Result<Option<RevenuePolicy>, sqlx::Error> {
        delegate!(self, policy(owner))
    }
    async fn set_policy(
        &self,
        owner: Address,
        policy: &RevenuePolicy,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        delegate!(self, set_policy(owner, policy, now_ms))
    }
    async fn record_withdrawal(
        &self,
        id: &str,
        owner: Address,
        asset: Address,
        amount: u128,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        delegate!(self, record_withdrawal(id, owner, asset, amount, now_ms))
    }
    async fn insert_challenge(
        &self,
        nonce: &str,
        address: Address,
        message: &str,
        expires_at_ms: i64,
    ) -> Result<(), sqlx::Error> {
        delegate!(
            self,
            insert_challenge(nonce, address, message, expires_at_ms)
        )
    }
    async fn take_challenge(&self, nonce: &str) -> Result<Option<(String, i64)>, sqlx::Error> {
        delegate!(self, take_challenge(nonce))
    }
    async fn insert_token(
        &self,
        token_hash: &str,
        address: Address,
        expires_at_ms: i64,
    ) -> Result<(), sqlx::Error> {
        delegate!(self, insert_token(token_hash, address, expires_at_ms))
    }
    async fn token_address(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<Address>, sqlx::Error> {
        delegate!(self, token_address(token_hash, now_ms))
    }
    async fn revoke_token(&self, token_hash: &str) -> Result<(), sqlx::Error> {
        delegate!(self, revoke_token(token_hash))
    }
    async fn set_payout_threshold(
        &self,
        owner: Address,
        threshold: Option<u128>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        delegate!(self, set_payout_threshold(owner, threshold, now_ms))
    }
    async fn payout_thresholds(&self) -> Result<Vec<(Address, u128)>, sqlx::Error> {
        delegate!(self, payout_thresholds())
    }
}

/// One suite, run against every store: SQLite always, PostgreSQL when one is
/// reachable (`STREAMWEAVE_TEST_POSTGRES`, default the local test database).
#[cfg(test)]
mod suite {
    use streamweave_ledger::{AccountRef, Address, Amount, B256, Balances, Transfer, TransferKind};

    use super::*;

    fn deposit(id: &str, owner: Address, amount: u128) -> Transfer {
        crate::money::payments::deposit(id.to_string(), owner, Address::ZERO, Amount(amount))
    }

    fn spend(id: &str, owner: Address, amount: u128) -> Transfer {
        crate::money::payments::withdrawal(
            id.to_string(),
            AccountRef::Available {
                owner,
                asset: Address::ZERO,
            },
            Address::ZERO,
            Amount(amount),
        )
    }

    async fn run_suite(store: &impl LedgerStore) {
        let alice = Address::repeat_byte(0xa1);
        let bob = Address::repeat_byte(0xb0);
        let available = |owner| AccountRef::Available {
            owner,
            asset: Address::ZERO,
        };

        // Deposits land; a retry with the same id moves nothing more.
        let batch = LedgerBatch {
            transfers: vec![deposit("d1", alice, 1000)],
            channels: vec![],
        };
        assert_eq!(
            store
                .commit(std::slice::from_ref(&batch), 1)
                .await
                .expect("commit"),
            vec![Ok(())]
        );
        assert_eq!(
            store.commit(&[batch], 2).await.expect("commit"),
            vec![Ok(())]
        );
        assert_eq!(
            store.balance(&available(alice)).await.expect("balance"),
            1000
        );

        // In one group: an overdraft is refused and rolled back, its neighbours commit.
        let group = [
            LedgerBatch {
                transfers: vec![deposit("d2", bob, 10)],
                channels: vec![],
            },
            LedgerBatch {
                transfers: vec![deposit("d3", bob, 5), spend("w1", alice, 5000)],
                channels: vec![],
            },
            LedgerBatch {
                transfers: vec![spend("w2", alice, 400)],
                channels: vec![],
            },
        ];
        let results = store.commit(&group, 3).await.expect("commit");
        assert_eq!(results[0], Ok(()));
        assert!(matches!(results[1], Err(Refusal::Insufficient(_))));
        assert_eq!(results[2], Ok(()));
        assert_eq!(
            store.balance(&available(bob)).await.expect("balance"),
            10,
            "d3 rolled back with w1"
        );
        assert_eq!(
            store.balance(&available(alice)).await.expect("balance"),
            600
        );
        assert_eq!(
            store
                .balance(&AccountRef::World {
                    asset: Address::ZERO
                })
                .await
                .expect("balance"),
            -610
        );

        // A group that cannot depend on its order commits as one; a repeated id moves money once.
        let group = [
            LedgerBatch {
                transfers: vec![deposit("d4", alice, 1)],
                channels: vec![],
            },
            LedgerBatch {
                transfers: vec![deposit("d4", alice, 1)],
                channels: vec![],
            },
            LedgerBatch {
                transfers: vec![deposit("d5", bob, 2), deposit("d6", bob, 3)],
                channels: vec![],
            },
        ];
        assert_eq!(
            store.commit(&group, 4).await.expect("commit"),
            vec![Ok(()); 3]
        );
        assert_eq!(
            store.balance(&available(alice)).await.expect("balance"),
            601
        );
        assert_eq!(store.balance(&available(bob)).await.expect("balance"), 15);
        let d2_again = LedgerBatch {
            transfers: vec![deposit("d2", bob, 10)],
            channels: vec![],
        };
        assert_eq!(
            store
                .commit(&[d2_again.clone(), d2_again], 4)
                .await
                .expect("commit"),
            vec![Ok(()); 2]
        );
        assert_eq!(
            store.balance(&available(bob)).await.expect("balance"),
            15,
            "retries of a committed id"
        );

        // Channels are saved whole and read back.
        let key = streamweave_ledger::SigningKey::from_bytes(&[5; 32]).expect("key");
        let (channel, opened) = streamweave_ledger::Channel::open(
            streamweave_ledger::OpenChannel {
                payer: alice,
                payee: bob,
                token: Address::ZERO,
                salt: B256::repeat_byte(1),
                signer: key.address(),
                deposit: Amount(100),
                expires_at_ms: 10_000,
                policy: streamweave_ledger::RevenuePolicy::sole(bob, 300),
            },
            streamweave_ledger::PaymentDomain::EMBEDDED,
            5,
        )
        .expect("opens");
        let results = store
            .commit(
                &[LedgerBatch {
                    transfers: opened,
                    channels: vec![channel.clone()],
                }],
                5,
            )
            .await
            .expect("commit");
        assert_eq!(results, vec![Ok(())]);
        assert_eq!(store.channels().await.expect("channels"), vec![channel]);

        // History: newest first, paged, only the owner's.
        let history = store.transfers_of(alice, None, 2).await.expect("history");
        assert_eq!(history.len(), 2);
        assert!(history[0].seq > history[1].seq);
        assert_eq!(history[0].transfer.kind, TransferKind::ChannelOpen);
        assert_eq!(history[1].transfer.id, "d4");
        let older = store
            .transfers_of(alice, Some(history[1].seq), 10)
            .await
            .expect("history");
        assert_eq!(
            older
                .iter()
                .map(|t| t.transfer.id.as_str())
                .collect::<Vec<_>>(),
            ["w2", "d1"]
        );

        // Stored balances are exactly what the transfers say.
        let transfers = store.all_transfers().await.expect("transfers");
        let (derived, problems) = Balances::from_transfers(&transfers);
        assert!(problems.is_empty());
        for (key, stored) in store.stored_balances().await.expect("balances") {
            let expected = derived
                .iter()
                .find(|(a, _)| a.key() == key)
                .map(|(_, b)| *b)
                .unwrap_or(0);
            assert_eq!(stored, expected, "{key}");
        }

        // Policies, challenges (single use), tokens (expiry, revocation).
        let policy = streamweave_ledger::RevenuePolicy::sole(bob, 250);
        store.set_policy(bob, &policy, 1).await.expect("policy");
        assert_eq!(store.policy(bob).await.expect("policy"), Some(policy));
        assert_eq!(store.policy(alice).await.expect("policy"), None);
        store
            .insert_challenge("nonce12345", alice, "message", 100)
            .await
            .expect("challenge");
        assert_eq!(
            store.take_challenge("nonce12345").await.expect("take"),
            Some(("message".into(), 100))
        );
        assert_eq!(
            store.take_challenge("nonce12345").await.expect("take"),
            None
        );
        store
            .insert_token("hash", alice, 1000)
            .await
            .expect("token");
        assert_eq!(
            store.token_address("hash", 999).await.expect("token"),
            Some(alice)
        );
        assert_eq!(
            store.token_address("hash", 1000).await.expect("token"),
            None,
            "expired"
        );
        store.revoke_token("hash").await.expect("revoke");
        assert_eq!(
            store.token_address("hash", 10).await.expect("token"),
            None,
            "revoked"
        );
        store
            .record_withdrawal("w2", alice, Address::ZERO, 400, 3)
            .await
            .expect("withdrawal");
    }

    #[tokio::test]
    async fn sqlite_store_passes_the_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = crate::db::open(dir.path()).await.expect("open");
        let store = LedgerDb::new(pool.clone());
        run_suite(&store).await;
        // The schema itself refuses what the code would: negative balances, edits of transfers.
        assert!(
            sqlx::query("UPDATE ledger_accounts SET balance = '-1' WHERE kind = 'available'")
                .execute(&pool)
                .await
                .is_err()
        );
        assert!(
            sqlx::query("UPDATE ledger_transfers SET amount = '1'")
                .execute(&pool)
                .await
                .is_err()
        );
        assert!(
            sqlx::query("DELETE FROM ledger_transfers")
                .execute(&pool)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn postgres_store_passes_the_suite() {
        let url = std::env::var("STREAMWEAVE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let schema = format!("sw_test_{}", rand::random::<u32>());
        let store = match crate::ledger_pg::PgLedger::connect_in_schema(&url, &schema).await {
            Ok(store) => store,
            Err(err) => {
                if std::env::var_os("CI").is_some() {
                    panic!("PostgreSQL at {url} is required in CI: {err:#}");
                }
                eprintln!("skipping the PostgreSQL suite: {url} unreachable ({err:#})");
                return;
            }
        };
        run_suite(&store).await;
        let pool = store.pool().clone();
        assert!(
            sqlx::query("UPDATE ledger_accounts SET balance = -1 WHERE kind = 'available'")
                .execute(&pool)
                .await
                .is_err()
        );
        assert!(
            sqlx::query("DELETE FROM ledger_transfers")
                .execute(&pool)
                .await
                .is_err()
        );
        store.drop_schema(&schema).await.expect("drop schema");
    }
}
