//! Shared test vectors (key, domain, channel, amount -> channel id, digest,
//! signature) in `tests/vectors/vouchers.json`. The same file is checked by
//! the Node/viem test in `web/tests/`, so both sides agree byte for byte.
//! Regenerate with `UPDATE_VECTORS=1 cargo test -p streamweave-ledger --test vectors_file`.

use serde_json::{Value, json};
use streamweave_ledger::{Address, B256, PaymentDomain, SigningKey};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::from("0x"), |mut out, b| {
        out.push_str(&format!("{b:02x}"));
        out
    })
}

fn vectors() -> Value {
    let cases = [
        (0x01u8, 31337u64, Address::ZERO, Address::ZERO, 1u128),
        (0x02, 31337, Address::ZERO, Address::ZERO, 1_500_000),
        (
            0x03,
            8453,
            Address::repeat_byte(0xe5),
            Address::repeat_byte(0x83),
            u128::MAX,
        ),
        (
            0x04,
            1,
            Address::repeat_byte(0x11),
            Address::ZERO,
            340_282_366_920_938_463_463_374_607_431_768_211,
        ),
    ];
    let mut out = Vec::new();
    for (seed, chain_id, escrow, token, amount) in cases {
        let payer_key = SigningKey::from_bytes(&[seed; 32]).expect("key");
        let signer_key = SigningKey::from_bytes(&[seed.wrapping_add(0x40); 32]).expect("key");
        let payee = Address::repeat_byte(seed.wrapping_add(0x80));
        let salt = B256::repeat_byte(seed.wrapping_mul(7));
        let domain = PaymentDomain { chain_id, escrow };
        let channel_id = domain.channel_id(
            payer_key.address(),
            payee,
            token,
            salt,
            signer_key.address(),
        );
        let digest = domain.voucher_digest(channel_id, amount);
        let signature = signer_key.sign_digest(digest);
        out.push(json!({
            "signer_private_key": hex(&signer_key.to_bytes()),
            "payer": format!("{:#x}", payer_key.address()),
            "payee": format!("{payee:#x}"),
            "token": format!("{token:#x}"),
            "salt": format!("{salt:#x}"),
            "signer": format!("{:#x}", signer_key.address()),
            "escrow": format!("{escrow:#x}"),
            "chain_id": chain_id,
            "channel_id": format!("{channel_id:#x}"),
            "cumulative_amount": amount.to_string(),
            "digest": format!("{digest:#x}"),
            "signature": hex(&signature),
        }));
    }
    json!({ "domain": { "name": "StreamWeave", "version": "1" }, "vouchers": out })
}

#[test]
fn vectors_file_matches_the_implementation() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/vouchers.json");
    let computed = serde_json::to_string_pretty(&vectors()).expect("json") + "\n";
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::write(&path, &computed).expect("write vectors");
    }
    let stored =
        std::fs::read_to_string(&path).expect("vectors file exists (UPDATE_VECTORS=1 writes it)");
    assert_eq!(
        stored, computed,
        "the implementation no longer produces the shared vectors"
    );
}
