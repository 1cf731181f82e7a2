//! Wallet key files: 32 secret bytes as hex, readable by the owner only.

pub fn new_key() -> streamweave_ledger::SigningKey {
    loop {
        if let Ok(key) = streamweave_ledger::SigningKey::from_bytes(&rand::random::<[u8; 32]>()) {
            return key;
        }
    }
}

pub fn write_key(
    path: &std::path::Path,
    key: &streamweave_ledger::SigningKey,
) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", path.display()))?;
    writeln!(file, "{}", streamweave_client::hex(&key.to_bytes()))?;
    Ok(())
}

pub fn read_key(path: &std::path::Path) -> anyhow::Result<streamweave_ledger::SigningKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
    let hex = text.trim().trim_start_matches("0x");
    anyhow::ensure!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{} is not a key file",
        path.display()
    );
    let mut bytes = [0u8; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16)?;
    }
    streamweave_ledger::SigningKey::from_bytes(&bytes)
        .map_err(|_| anyhow::anyhow!("{} holds an invalid key", path.display()))
}
