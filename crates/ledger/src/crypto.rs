//! EIP-712 vouchers, channel ids, EIP-191 messages and secp256k1 recovery.
//!
//! Hashing and ABI encoding come from alloy; recovery from libsecp256k1 (the
//! `secp256k1` crate), the hot path of voucher acceptance.

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::{Eip712Domain, SolStruct, SolValue, eip712_domain, sol};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, SECP256K1};

sol! {
    /// The voucher a payer's session signer signs.
    struct Voucher {
        bytes32 channelId;
        uint128 cumulativeAmount;
    }
}

/// Where vouchers are valid: the chain and the escrow (contract) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentDomain {
    /// EIP-155 chain id (31337 for the embedded ledger).
    pub chain_id: u64,
    /// The escrow address (`verifyingContract`); zero for the embedded ledger.
    pub escrow: Address,
}

impl PaymentDomain {
    /// The embedded ledger's defaults: chain 31337, escrow zero.
    pub const EMBEDDED: PaymentDomain = PaymentDomain {
        chain_id: 31337,
        escrow: Address::ZERO,
    };

    fn eip712(&self) -> Eip712Domain {
        eip712_domain! {
            name: "StreamWeave",
            version: "1",
            chain_id: self.chain_id,
            verifying_contract: self.escrow,
        }
    }

    /// The EIP-712 digest a signer signs for a voucher.
    pub fn voucher_digest(&self, channel_id: B256, cumulative_amount: u128) -> B256 {
        let voucher = Voucher {
            channelId: channel_id,
            cumulativeAmount: cumulative_amount,
        };
        // `keccak256(0x19 0x01 ‖ domainSeparator ‖ hashStruct(voucher))`,
        // the separator kept from the last call on this thread: it is three
        // of the five hashes of a digest, and a node has one domain.
        let separator = self.separator();
        let mut message = [0u8; 66];
        message[0] = 0x19;
        message[1] = 0x01;
        message[2..34].copy_from_slice(separator.as_slice());
        message[34..].copy_from_slice(voucher.eip712_hash_struct().as_slice());
        keccak256(message)
    }

    /// The EIP-712 domain separator.
    fn separator(&self) -> B256 {
        thread_local! {
            static LAST: std::cell::Cell<Option<(PaymentDomain, B256)>> =
                const { std::cell::Cell::new(None) };
        }
        LAST.with(|last| match last.get() {
            Some((domain, separator)) if domain == *self => separator,
            _ => {
                let separator = self.eip712().separator();
                last.set(Some((*self, separator)));
                separator
            }
        })
    }

    /// `keccak256(abi.encode(payer, payee, token, salt, signer, escrow, chainId))`.
    pub fn channel_id(
        &self,
        payer: Address,
        payee: Address,
        token: Address,
        salt: B256,
        signer: Address,
    ) -> B256 {
        keccak256(
            (
                payer,
                payee,
                token,
                salt,
                signer,
                self.escrow,
                U256::from(self.chain_id),
            )
                .abi_encode(),
        )
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Not 65 bytes of hex.
    #[error("signature must be 65 bytes r||s||v as 0x-hex")]
    Malformed,
    /// `v` not in {0, 1, 27, 28}.
    #[error("signature v must be 27 or 28")]
    BadRecoveryId,
    /// `s` in the upper half of the curve order (malleable).
    #[error("signature s must be in the lower half of the curve order")]
    HighS,
    /// Recovery failed (r or s out of range, no point).
    #[error("signature does not recover to a public key")]
    Unrecoverable,
}

impl SignatureError {
    /// Stable machine code for the wire.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Malformed => "signature-malformed",
            SignatureError::BadRecoveryId => "signature-bad-v",
            SignatureError::HighS => "signature-high-s",
            SignatureError::Unrecoverable => "signature-invalid",
        }
    }
}

/// Half the secp256k1 group order, big-endian: the largest `s` accepted.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// A parsed 65-byte signature, `v` normalized to 0/1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature65 {
    bytes: [u8; 65],
}

impl Signature65 {
    /// Parses raw bytes: r (32) || s (32) || v (1), v in {0,1,27,28}, low s.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignatureError> {
        let bytes: [u8; 65] = bytes.try_into().map_err(|_| SignatureError::Malformed)?;
        let mut normalized = bytes;
        normalized[64] = match bytes[64] {
            0 | 27 => 0,
            1 | 28 => 1,
            _ => return Err(SignatureError::BadRecoveryId),
        };
        if bytes[32..64] > HALF_ORDER[..] {
            return Err(SignatureError::HighS);
        }
        Ok(Signature65 { bytes: normalized })
    }

    /// Parses `0x`-prefixed (or bare) hex.
    pub fn from_hex(text: &str) -> Result<Self, SignatureError> {
        let hex = text.strip_prefix("0x").unwrap_or(text);
        if hex.len() != 130 {
            return Err(SignatureError::Malformed);
        }
        let bytes: [u8; 65] =
            alloy_primitives::hex::decode_to_array(hex).map_err(|_| SignatureError::Malformed)?;
        Self::from_bytes(&bytes)
    }

    /// The canonical bytes (v as 27/28), e.g. to store.
    pub fn to_bytes(&self) -> [u8; 65] {
        let mut out = self.bytes;
        out[64] += 27;
        out
    }

    /// Recovers the signer of a 32-byte digest.
    pub fn recover(&self, digest: B256) -> Result<Address, SignatureError> {
        let id = RecoveryId::try_from(i32::from(self.bytes[64]))
            .map_err(|_| SignatureError::BadRecoveryId)?;
        let signature = RecoverableSignature::from_compact(&self.bytes[..64], id)
            .map_err(|_| SignatureError::Unrecoverable)?;
        let message = Message::from_digest(digest.0);
        let key = SECP256K1
            .recover_ecdsa(message, &signature)
            .map_err(|_| SignatureError::Unrecoverable)?;
        let uncompressed = key.serialize_uncompressed();
        Ok(Address::from_slice(&keccak256(&uncompressed[1..])[12..]))
    }
}

/// The EIP-191 `personal_sign` digest of a message.
pub fn personal_sign_digest(message: &[u8]) -> B256 {
    let mut prefixed = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
    prefixed.extend_from_slice(message);
    keccak256(prefixed)
}

/// A local signing key (tests, the SDK, the demo; the server never holds user keys).
#[derive(Clone)]
pub struct SigningKey {
    secret: secp256k1::SecretKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.address())
    }
}

impl SigningKey {
    /// A key from 32 secret bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, SignatureError> {
        secp256k1::SecretKey::from_byte_array(*bytes)
            .map(|secret| SigningKey { secret })
            .map_err(|_| SignatureError::Malformed)
    }

    /// The secret bytes (to save a key file).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret.secret_bytes()
    }

    /// The key's address.
    pub fn address(&self) -> Address {
        let public = secp256k1::PublicKey::from_secret_key(SECP256K1, &self.secret);
        Address::from_slice(&keccak256(&public.serialize_uncompressed()[1..])[12..])
    }

    /// Signs a digest: 65 bytes r||s||v with v in {27, 28}, low s.
    pub fn sign_digest(&self, digest: B256) -> [u8; 65] {
        let message = Message::from_digest(digest.0);
        let signature = SECP256K1.sign_ecdsa_recoverable(message, &self.secret);
        let (id, compact) = signature.serialize_compact();
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&compact);
        out[64] = 27 + i32::from(id) as u8;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes(&[byte; 32]).expect("valid key")
    }

    #[test]
    fn digest_matches_the_eip712_definition() {
        // Recompute the digest by hand from the EIP-712 definition.
        let domain = PaymentDomain {
            chain_id: 31337,
            escrow: Address::repeat_byte(0xee),
        };
        let channel = B256::repeat_byte(0xab);
        let amount = 1_500_000u128;
        let type_hash = keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)");
        let struct_hash = keccak256((type_hash, channel, U256::from(amount)).abi_encode());
        let domain_type = keccak256(
            "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
        );
        let domain_separator = keccak256(
            (
                domain_type,
                keccak256("StreamWeave"),
                keccak256("1"),
                U256::from(31337u64),
                domain.escrow,
            )
                .abi_encode(),
        );
        let mut preimage = vec![0x19, 0x01];
        preimage.extend_from_slice(domain_separator.as_slice());
        preimage.extend_from_slice(struct_hash.as_slice());
        assert_eq!(domain.voucher_digest(channel, amount), keccak256(preimage));
    }

    #[test]
    fn the_kept_separator_follows_the_domain() {
        let domains = [
            PaymentDomain::EMBEDDED,
            PaymentDomain {
                chain_id: 8453,
                escrow: Address::repeat_byte(0x11),
            },
            PaymentDomain {
                chain_id: 31337,
                escrow: Address::repeat_byte(0x11),
            },
        ];
        for domain in domains.iter().chain(domains.iter().rev()) {
            let voucher = Voucher {
                channelId: B256::repeat_byte(7),
                cumulativeAmount: 42,
            };
            assert_eq!(
                domain.voucher_digest(B256::repeat_byte(7), 42),
                voucher.eip712_signing_hash(&domain.eip712())
            );
        }
    }

    #[test]
    fn sign_and_recover_round_trip() {
        let signer = key(7);
        let digest = PaymentDomain::EMBEDDED.voucher_digest(B256::repeat_byte(1), 10);
        let signature = signer.sign_digest(digest);
        let parsed = Signature65::from_bytes(&signature).expect("valid");
        assert_eq!(parsed.recover(digest).expect("recovers"), signer.address());
        assert_eq!(parsed.to_bytes(), signature);
        // v as 0/1 is accepted and normalized.
        let mut zero_one = signature;
        zero_one[64] -= 27;
        assert_eq!(Signature65::from_bytes(&zero_one).expect("valid"), parsed);
        // A different digest recovers someone else.
        let other = PaymentDomain::EMBEDDED.voucher_digest(B256::repeat_byte(1), 11);
        assert_ne!(parsed.recover(other).expect("recovers"), signer.address());
    }

    #[test]
    fn malleable_and_malformed_signatures_are_refused() {
        let signer = key(9);
        let digest = personal_sign_digest(b"hello");
        let signature = signer.sign_digest(digest);
        // s' = n - s, v flipped: the same signature's malleable twin.
        let order = U256::from_be_slice(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c,
            0xd0, 0x36, 0x41, 0x41,
        ]);
        let s = U256::from_be_slice(&signature[32..64]);
        let mut twin = signature;
        twin[32..64].copy_from_slice(&(order - s).to_be_bytes::<32>());
        twin[64] = if signature[64] == 27 { 28 } else { 27 };
        assert_eq!(Signature65::from_bytes(&twin), Err(SignatureError::HighS));
        let mut bad_v = signature;
        bad_v[64] = 29;
        assert_eq!(
            Signature65::from_bytes(&bad_v),
            Err(SignatureError::BadRecoveryId)
        );
        assert_eq!(
            Signature65::from_bytes(&signature[..64]),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            Signature65::from_hex("0x1234"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            Signature65::from_hex(&"zz".repeat(65)),
            Err(SignatureError::Malformed)
        );
        assert!(
            Signature65::from_bytes(&[0u8; 65])
                .expect("parses")
                .recover(digest)
                .is_err()
        );
    }

    #[test]
    fn channel_id_is_the_abi_encoding_hash() {
        let domain = PaymentDomain::EMBEDDED;
        let (payer, payee, token, signer) = (
            Address::repeat_byte(1),
            Address::repeat_byte(2),
            Address::ZERO,
            Address::repeat_byte(3),
        );
        let salt = B256::repeat_byte(4);
        let mut encoded = Vec::new();
        for address in [payer, payee, token] {
            encoded.extend_from_slice(&[0u8; 12]);
            encoded.extend_from_slice(address.as_slice());
        }
        encoded.extend_from_slice(salt.as_slice());
        for address in [signer, domain.escrow] {
            encoded.extend_from_slice(&[0u8; 12]);
            encoded.extend_from_slice(address.as_slice());
        }
        encoded.extend_from_slice(&U256::from(31337u64).to_be_bytes::<32>());
        assert_eq!(
            domain.channel_id(payer, payee, token, salt, signer),
            keccak256(encoded)
        );
    }
}
