//! Drives the channel state machine with arbitrary operations (vouchers with
//! arbitrary amounts and signature bytes, valid ones too, top-ups, closes,
//! time passing) against an in-memory store that refuses negative balances,
//! and checks the full audit after every step (LDK's chanmon_consistency idea).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamweave_ledger::{
    AccountRef, Address, Amount, B256, Balances, Channel, OpenChannel, PaymentDomain, Recipient, RevenuePolicy,
    SigningKey, Transfer, TransferKind, audit,
};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let domain = PaymentDomain::EMBEDDED;
    let asset = Address::ZERO;
    let payer = Address::repeat_byte(1);
    let key = SigningKey::from_bytes(&[7; 32]).expect("valid key");
    let recipients = (0..(next().unwrap_or(1) % 4 + 1))
        .map(|i| Recipient { address: Address::with_last_byte(i + 10), share: u64::from(next().unwrap_or(1)) + 1 })
        .collect();
    let policy = RevenuePolicy { platform_fee_bps: u16::from(next().unwrap_or(0)) * 40, recipients };
    let mut transfers = vec![Transfer {
        id: "deposit".into(),
        debit: AccountRef::World { asset },
        credit: AccountRef::Available { owner: payer, asset },
        asset,
        amount: Amount(1_000_000),
        kind: TransferKind::Deposit,
        channel: None,
    }];
    let Ok((mut channel, opened)) = Channel::open(
        OpenChannel {
            payer,
            payee: Address::repeat_byte(2),
            token: asset,
            salt: B256::ZERO,
            signer: key.address(),
            deposit: Amount(u128::from(next().unwrap_or(1)) * 1000 + 1),
            expires_at_ms: 1_000_000,
            policy,
        },
        domain,
        0,
    ) else {
        return;
    };
    transfers.extend(opened);
    let mut now = 0u64;
    while let Some(op) = next() {
        let arg = u128::from(next().unwrap_or(0)) * 97;
        let mut candidate = channel.clone();
        let produced = match op % 5 {
            0 => {
                let signature = key.sign_digest(domain.voucher_digest(channel.id, arg));
                candidate.verify_voucher(Amount(arg), &signature).and_then(|v| candidate.apply_voucher(&v, now)).map(|o| o.transfers).ok()
            }
            1 => {
                let raw: Vec<u8> = (0..65).map(|_| next().unwrap_or(0)).collect();
                candidate.verify_voucher(Amount(arg), &raw).and_then(|v| candidate.apply_voucher(&v, now)).map(|o| o.transfers).ok()
            }
            2 => candidate.top_up(Amount(arg), now).ok(),
            3 => candidate.close(now, 5_000).ok().map(|()| Vec::new()),
            _ => {
                now += arg as u64 * 10;
                candidate.settle(now)
            }
        };
        if let Some(produced) = produced {
            let mut next_transfers = transfers.clone();
            next_transfers.extend(produced);
            let (balances, _) = Balances::from_transfers(&next_transfers);
            if balances.iter().all(|(account, balance)| *balance >= 0 || account.may_go_negative()) {
                transfers = next_transfers;
                channel = candidate;
            }
        }
        let report = audit(&transfers, std::slice::from_ref(&channel));
        assert!(report.is_clean(), "{:?}", report.violations);
    }
});
