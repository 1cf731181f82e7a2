//! Sign-In with Ethereum (EIP-4361): the message we issue, its strict parser,
//! and verification of a signed message at a given time.

use alloy_primitives::Address;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::crypto::{Signature65, SignatureError, personal_sign_digest};

/// An EIP-4361 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiweMessage {
    /// RFC 3986 authority of the site asking (`example.com:8080`).
    pub domain: String,
    /// The account signing in.
    pub address: Address,
    /// Human-readable statement.
    pub statement: Option<String>,
    /// The site's URI.
    pub uri: String,
    /// Chain id.
    pub chain_id: u64,
    /// Single-use nonce (at least 8 alphanumerics).
    pub nonce: String,
    /// Issued at, ms since the epoch.
    pub issued_at_ms: u64,
    /// Expires at, ms since the epoch.
    pub expires_at_ms: Option<u64>,
}

/// Why a sign-in was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SiweError {
    /// Not an EIP-4361 message.
    #[error("not a sign-in message: {0}")]
    Malformed(&'static str),
    /// For another site.
    #[error("the message is for another domain")]
    WrongDomain,
    /// Past its expiration time (or issued in the future).
    #[error("the message has expired")]
    Expired,
    /// The signature is not valid.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Signed by someone other than the address in the message.
    #[error("the signature is not the address's")]
    WrongSigner,
}

fn rfc3339(ms: u64) -> String {
    DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(text: &str) -> Result<u64, SiweError> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
        .ok_or(SiweError::Malformed("bad timestamp"))
}

const HEADER_SUFFIX: &str = " wants you to sign in with your Ethereum account:";

impl SiweMessage {
    /// The message text, as EIP-4361 lays it out (address EIP-55 checksummed).
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}{HEADER_SUFFIX}\n{}\n\n",
            self.domain,
            self.address.to_checksum(None)
        );
        if let Some(statement) = &self.statement {
            text.push_str(statement);
            text.push_str("\n\n");
        }
        text.push_str(&format!(
            "URI: {}\nVersion: 1\nChain ID: {}\nNonce: {}\nIssued At: {}",
            self.uri,
            self.chain_id,
            self.nonce,
            rfc3339(self.issued_at_ms)
        ));
        if let Some(expires) = self.expires_at_ms {
            text.push_str(&format!("\nExpiration Time: {}", rfc3339(expires)));
        }
        text
    }

    /// Parses a message strictly (unknown or misplaced lines are refused).
    pub fn parse(text: &str) -> Result<Self, SiweError> {
        if text.len() > 4096 {
            return Err(SiweError::Malformed("too long"));
        }
        let mut lines = text.split('\n');
        let domain = lines
            .next()
            .and_then(|l| l.strip_suffix(HEADER_SUFFIX))
            .filter(|d| !d.is_empty() && !d.contains(char::is_whitespace))
            .ok_or(SiweError::Malformed("header"))?
            .to_string();
        let address: Address = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or(SiweError::Malformed("address"))?;
        if lines.next() != Some("") {
            return Err(SiweError::Malformed("blank line after address"));
        }
        let mut rest: Vec<&str> = lines.collect();
        let statement = match rest.first() {
            Some(first) if !first.starts_with("URI: ") => {
                if rest.get(1) != Some(&"") {
                    return Err(SiweError::Malformed("blank line after statement"));
                }
                let statement = first.to_string();
                rest.drain(..2);
                Some(statement)
            }
            _ => None,
        };
        let mut fields = rest.into_iter();
        let mut field = |name: &'static str| {
            fields
                .next()
                .and_then(|l| l.strip_prefix(name))
                .map(str::to_string)
                .ok_or(SiweError::Malformed(name))
        };
        let uri = field("URI: ")?;
        if field("Version: ")? != "1" {
            return Err(SiweError::Malformed("version"));
        }
        let chain_id = field("Chain ID: ")?
            .parse()
            .map_err(|_| SiweError::Malformed("chain id"))?;
        let nonce = field("Nonce: ")?;
        if nonce.len() < 8 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SiweError::Malformed("nonce"));
        }
        let issued_at_ms = parse_time(&field("Issued At: ")?)?;
        let expires_at_ms = match fields.next() {
            None => None,
            Some(line) => Some(parse_time(
                line.strip_prefix("Expiration Time: ")
                    .ok_or(SiweError::Malformed("unsupported field"))?,
            )?),
        };
        if fields.next().is_some() {
            return Err(SiweError::Malformed("unsupported field"));
        }
        Ok(SiweMessage {
            domain,
            address,
            statement,
            uri,
            chain_id,
            nonce,
            issued_at_ms,
            expires_at_ms,
        })
    }

    /// Verifies a signed message for `expected_domain` at `now_ms`: parses it,
    /// checks domain and times, and that the signature is the address's.
    /// The caller checks the nonce (single use) against what it issued.
    pub fn verify(
        text: &str,
        signature: &[u8],
        expected_domain: &str,
        now_ms: u64,
    ) -> Result<SiweMessage, SiweError> {
        let message = SiweMessage::parse(text)?;
        if message.domain != expected_domain {
            return Err(SiweError::WrongDomain);
        }
        if message.expires_at_ms.is_some_and(|e| now_ms >= e)
            || message.issued_at_ms > now_ms.saturating_add(60_000)
        {
            return Err(SiweError::Expired);
        }
        let signature = Signature65::from_bytes(signature)?;
        if signature.recover(personal_sign_digest(text.as_bytes()))? != message.address {
            return Err(SiweError::WrongSigner);
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SigningKey;

    fn message(address: Address) -> SiweMessage {
        SiweMessage {
            domain: "localhost:8080".into(),
            address,
            statement: Some("Sign in to StreamWeave.".into()),
            uri: "http://localhost:8080".into(),
            chain_id: 31337,
            nonce: "abcdef123456".into(),
            issued_at_ms: 1_700_000_000_000,
            expires_at_ms: Some(1_700_000_300_000),
        }
    }

    #[test]
    fn text_round_trips_and_verifies() {
        let key = SigningKey::from_bytes(&[3; 32]).expect("key");
        let original = message(key.address());
        let text = original.to_text();
        assert!(
            text.starts_with("localhost:8080 wants you to sign in with your Ethereum account:\n0x")
        );
        assert!(text.contains("\nIssued At: 2023-11-14T22:13:20.000Z\n"));
        assert_eq!(SiweMessage::parse(&text).expect("parses"), original);
        let signature = key.sign_digest(personal_sign_digest(text.as_bytes()));
        let now = 1_700_000_100_000;
        assert_eq!(
            SiweMessage::verify(&text, &signature, "localhost:8080", now).expect("valid"),
            original
        );
        assert_eq!(
            SiweMessage::verify(&text, &signature, "evil.example", now),
            Err(SiweError::WrongDomain)
        );
        assert_eq!(
            SiweMessage::verify(&text, &signature, "localhost:8080", 1_700_000_300_000),
            Err(SiweError::Expired)
        );
        let tampered = text.replace("31337", "1");
        assert_eq!(
            SiweMessage::verify(&tampered, &signature, "localhost:8080", now),
            Err(SiweError::WrongSigner)
        );
        let mut no_statement = original.clone();
        no_statement.statement = None;
        assert_eq!(
            SiweMessage::parse(&no_statement.to_text()).expect("parses"),
            no_statement
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        let text = message(Address::repeat_byte(1)).to_text();
        for bad in [
            String::new(),
            text.replace("Version: 1", "Version: 2"),
            text.replace("Nonce: abcdef123456", "Nonce: short"),
            format!("{text}\nResources:"),
            text.replace(" wants you", " asks you"),
            "x".repeat(5000),
        ] {
            assert!(
                matches!(SiweMessage::parse(&bad), Err(SiweError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
