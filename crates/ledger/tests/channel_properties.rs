//! Random sequences of channel operations (valid, replayed, lower, above
//! deposit, wrong signer, high-s, malformed vouchers; top-ups, closes,
//! settlements, crashes that drop uncommitted work) keep every audit
//! invariant, checked after every step.

use alloy_primitives::U256;
use proptest::prelude::*;
use streamweave_ledger::{
    AccountRef, Address, Amount, B256, Balances, Channel, OpenChannel, PaymentDomain, Recipient,
    RevenuePolicy, SigningKey, Transfer, TransferKind, audit,
};

/// An in-memory store: applies transfers atomically, refusing any that
/// would take a non-world balance below zero, as the databases do.
#[derive(Clone, Default)]
struct MemoryStore {
    transfers: Vec<Transfer>,
    channels: Vec<Channel>,
}

impl MemoryStore {
    fn commit(&mut self, transfers: Vec<Transfer>, channel: Option<Channel>) -> bool {
        let mut next = self.transfers.clone();
        next.extend(transfers);
        let (balances, _) = Balances::from_transfers(&next);
        if balances
            .iter()
            .any(|(account, balance)| *balance < 0 && !account.may_go_negative())
        {
            return false;
        }
        self.transfers = next;
        if let Some(channel) = channel {
            match self.channels.iter_mut().find(|c| c.id == channel.id) {
                Some(existing) => *existing = channel,
                None => self.channels.push(channel),
            }
        }
        true
    }
}

#[derive(Debug, Clone)]
enum Op {
    Voucher { channel: usize, amount: u64 },
    Replay { channel: usize },
    WrongSigner { channel: usize, amount: u64 },
    HighS { channel: usize, amount: u64 },
    Malformed { channel: usize, length: usize },
    TopUp { channel: usize, amount: u64 },
    Close { channel: usize },
    Advance { ms: u64 },
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 1..3_000u64).prop_map(|(channel, amount)| Op::Voucher { channel, amount }),
        1 => (0..3usize).prop_map(|channel| Op::Replay { channel }),
        1 => (0..3usize, 1..3_000u64).prop_map(|(channel, amount)| Op::WrongSigner { channel, amount }),
        1 => (0..3usize, 1..3_000u64).prop_map(|(channel, amount)| Op::HighS { channel, amount }),
        1 => (0..3usize, 0..70usize).prop_map(|(channel, length)| Op::Malformed { channel, length }),
        1 => (0..3usize, 1..2_000u64).prop_map(|(channel, amount)| Op::TopUp { channel, amount }),
        1 => (0..3usize).prop_map(|channel| Op::Close { channel }),
        1 => (1..400_000u64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Crash),
    ]
}

const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

fn high_s_twin(signature: [u8; 65]) -> [u8; 65] {
    let order = U256::from_be_slice(&ORDER);
    let s = U256::from_be_slice(&signature[32..64]);
    let mut twin = signature;
    twin[32..64].copy_from_slice(&(order - s).to_be_bytes::<32>());
    twin[64] = if signature[64] == 27 { 28 } else { 27 };
    twin
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_sequence_keeps_the_audit_clean(
        shares in prop::collection::vec(1u64..50, 1..4),
        bps in 0u16..=10_000,
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let domain = PaymentDomain::EMBEDDED;
        let asset = Address::ZERO;
        let payer = Address::repeat_byte(0xaa);
        let creator = Address::repeat_byte(0xbb);
        let stranger = SigningKey::from_bytes(&[0x55; 32]).expect("key");
        let mut store = MemoryStore::default();
        assert!(store.commit(vec![Transfer {
            id: "deposit:1".into(),
            debit: AccountRef::World { asset },
            credit: AccountRef::Available { owner: payer, asset },
            asset,
            amount: Amount(10_000),
            kind: TransferKind::Deposit,
            channel: None,
        }], None));
        let policy = RevenuePolicy {
            platform_fee_bps: bps,
            recipients: shares
                .iter()
                .enumerate()
                .map(|(i, &share)| Recipient { address: Address::with_last_byte(i as u8 + 1), share })
                .collect(),
        };
        let mut now_ms = 1_000u64;
        let mut keys = Vec::new();
        let mut last_signed: Vec<Option<(Amount, [u8; 65])>> = Vec::new();
        for index in 0..3u8 {
            let key = SigningKey::from_bytes(&[index + 1; 32]).expect("key");
            let (channel, transfers) = Channel::open(
                OpenChannel {
                    payer,
                    payee: creator,
                    token: asset,
                    salt: B256::with_last_byte(index),
                    signer: key.address(),
                    deposit: Amount(2_000),
                    expires_at_ms: now_ms + 1_000_000,
                    policy: policy.clone(),
                },
                domain,
                now_ms,
            ).expect("opens");
            prop_assert!(store.commit(transfers, Some(channel)));
            keys.push(key);
            last_signed.push(None);
        }
        let mut committed = store.clone();
        for op in ops {
            match op {
                Op::Voucher { channel, amount } | Op::WrongSigner { channel, amount } | Op::HighS { channel, amount } => {
                    let mut state = store.channels[channel].clone();
                    let amount = Amount(u128::from(amount));
                    let digest = domain.voucher_digest(state.id, amount.0);
                    let signer = match op { Op::WrongSigner { .. } => &stranger, _ => &keys[channel] };
                    let mut signature = signer.sign_digest(digest);
                    if matches!(op, Op::HighS { .. }) {
                        signature = high_s_twin(signature);
                    }
                    let before = state.redeemed;
                    match state.verify_voucher(amount, &signature).and_then(|v| state.apply_voucher(&v, now_ms)) {
                        Ok(outcome) => {
                            prop_assert!(matches!(op, Op::Voucher { .. }), "{op:?} must be refused");
                            prop_assert!(amount > before || !outcome.new);
                            prop_assert!(store.commit(outcome.transfers, Some(state)));
                            last_signed[channel] = Some((amount, signature));
                        }
                        Err(_) => prop_assert_eq!(&store.channels[channel].redeemed, &before),
                    }
                }
                Op::Replay { channel } => {
                    if let Some((amount, signature)) = last_signed[channel] {
                        let mut state = store.channels[channel].clone();
                        if let Ok(outcome) = state.verify_voucher(amount, &signature).and_then(|v| state.apply_voucher(&v, now_ms)) {
                            prop_assert!(!outcome.new || amount > store.channels[channel].redeemed);
                            prop_assert!(store.commit(outcome.transfers, Some(state)));
                        }
                    }
                }
                Op::Malformed { channel, length } => {
                    let state = store.channels[channel].clone();
                    prop_assert!(state.verify_voucher(Amount(1), &vec![7u8; length]).is_err());
                }
                Op::TopUp { channel, amount } => {
                    let mut state = store.channels[channel].clone();
                    if let Ok(transfers) = state.top_up(Amount(u128::from(amount)), now_ms) {
                        // Refused by the store when the payer lacks the funds: the channel stays as it was.
                        let _ = store.commit(transfers, Some(state));
                    }
                }
                Op::Close { channel } => {
                    let mut state = store.channels[channel].clone();
                    if state.close(now_ms, 600_000).is_ok() {
                        prop_assert!(store.commit(Vec::new(), Some(state)));
                    }
                }
                Op::Advance { ms } => {
                    now_ms += ms;
                    for channel in 0..store.channels.len() {
                        let mut state = store.channels[channel].clone();
                        if let Some(transfers) = state.settle(now_ms) {
                            prop_assert!(store.commit(transfers, Some(state)));
                        }
                    }
                    committed = store.clone();
                }
                Op::Crash => {
                    // Work since the last durable point is lost; what was committed remains.
                    store = committed.clone();
                }
            }
            let report = audit(&store.transfers, &store.channels);
            prop_assert!(report.is_clean(), "{:?}", report.violations);
        }
    }
}
