//! Shared split vectors (policy, redeemed amounts -> fee, recipients' totals,
//! waiting units, and what each recipient holds once the channel closes) in
//! `tests/vectors/splits.json`. The escrow contract's forge tests
//! (`contracts/test/`) read the same file, so the ledger and the chain credit
//! the same units. Regenerate with
//! `UPDATE_VECTORS=1 cargo test -p streamweave-ledger --test splits_file`.

use serde_json::{Value, json};
use streamweave_ledger::{Address, Amount, Recipient, RevenuePolicy};

fn policy(shares: &[u64], bps: u16) -> RevenuePolicy {
    RevenuePolicy {
        platform_fee_bps: bps,
        recipients: shares
            .iter()
            .enumerate()
            .map(|(i, &share)| Recipient {
                address: Address::repeat_byte(0xa0 + i as u8),
                share,
            })
            .collect(),
    }
}

fn vectors() -> Value {
    let cases: [(&[u64], u16, &[u128]); 6] = [
        (&[2, 1], 300, &[1, 999, 1000, 1001, 1_500_000]),
        (&[1], 300, &[1, 2, 50_000, 1_000_000]),
        (&[3, 2, 1], 250, &[7, 100, 12_345, 1_000_001]),
        (&[1, 1, 1, 1, 1, 1, 1], 0, &[6, 13, 99_999]),
        (&[5, 3], 10_000, &[1, 100]),
        (
            &[u64::MAX / 2, 1, 7],
            1,
            &[
                1,
                65_536,
                340_282_366_920_938_463_463_374_607_431_768_211,
                u128::MAX,
            ],
        ),
    ];
    let mut out = Vec::new();
    for (shares, bps, grosses) in cases {
        let p = policy(shares, bps);
        p.validate().expect("valid policy");
        let steps: Vec<Value> = grosses
            .iter()
            .map(|&g| {
                let t = p.totals(Amount(g));
                let leftover = t.leftover.0;
                let closed: Vec<String> = t
                    .recipients
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (a.0 + u128::from((i as u128) < leftover)).to_string())
                    .collect();
                json!({
                    "gross": g.to_string(),
                    "fee": t.fee.0.to_string(),
                    "recipients": t.recipients.iter().map(|a| a.0.to_string()).collect::<Vec<_>>(),
                    "leftover": leftover.to_string(),
                    "recipients_at_close": closed,
                })
            })
            .collect();
        out.push(json!({
            "platform_fee_bps": bps,
            "recipients": p.recipients.iter().map(|r| format!("{:#x}", r.address)).collect::<Vec<_>>(),
            "shares": shares.iter().map(u64::to_string).collect::<Vec<_>>(),
            "steps": steps,
        }));
    }
    json!({ "splits": out })
}

#[test]
fn splits_file_matches_the_implementation() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/splits.json");
    let computed = serde_json::to_string_pretty(&vectors()).expect("json") + "\n";
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::write(&path, &computed).expect("write vectors");
    }
    let stored =
        std::fs::read_to_string(&path).expect("vectors file exists (UPDATE_VECTORS=1 writes it)");
    assert_eq!(
        stored, computed,
        "the implementation no longer produces the shared split vectors"
    );
}
