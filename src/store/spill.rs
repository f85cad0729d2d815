//! A replica's spill of refreshed token pairs the store refused.
//!
//! Cronofy may rotate the refresh token at every refresh: a pair that was
//! issued but could not be stored is the only copy of a live refresh token.
//! It is kept in memory and, when `store.spill_dir` is set, in one file per
//! grant there, sealed under the current encryption key (bound to tenant,
//! sub and purpose, like the database's columns), written atomically and
//! synced. A restart or an OOM kill then loses nothing: the pairs are read
//! back at start and written to the store, each through its grant's own
//! refresh flight, before Cronofy is ever asked again for that grant.
//! calgate refuses to start when the directory cannot be written.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tracing::{error, warn};

use super::{Store, grants::binding};
use crate::domain::grant::Tokens;

const SPILL_ACCESS: &str = "spilled_access_token";
const SPILL_REFRESH: &str = "spilled_refresh_token";
const EXTENSION: &str = "pair";

/// A spilled pair, as read back.
#[derive(Debug)]
pub struct SpilledPair {
    /// Tenant id.
    pub tenant: String,
    /// Grant sub.
    pub sub: String,
    /// The grant version the pair replaces (compare-and-swap).
    pub version: i64,
    /// The tokens.
    pub tokens: Tokens,
}

#[derive(Serialize, Deserialize)]
struct SpillFile {
    tenant: String,
    sub: String,
    version: i64,
    key_id: String,
    access: String,
    refresh: String,
    access_expires_at: i64,
}

impl Store {
    fn spill_path(dir: &Path, tenant: &str, sub: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(format!("{tenant}\n{sub}").as_bytes()));
        dir.join(format!("{name}.{EXTENSION}"))
    }

    /// Writes a pair to the spill directory, when one is configured. Failure
    /// is logged: the pair is still kept in memory.
    pub fn spill_pair(&self, tenant: &str, sub: &str, version: i64, tokens: &Tokens) {
        let Some(dir) = &self.spill_dir else { return };
        let cipher = self.cipher();
        let file = SpillFile {
            tenant: tenant.to_owned(),
            sub: sub.to_owned(),
            version,
            key_id: cipher.current_key_id().to_owned(),
            access: STANDARD.encode(cipher.seal(&tokens.access_token, &binding(tenant, sub, SPILL_ACCESS))),
            refresh: STANDARD.encode(cipher.seal(&tokens.refresh_token, &binding(tenant, sub, SPILL_REFRESH))),
            access_expires_at: tokens.access_expires_at.unix_timestamp(),
        };
        let path = Store::spill_path(dir, tenant, sub);
        if let Err(failure) = write_atomically(&path, &serde_json::to_vec(&file).unwrap_or_default()) {
            error!(tenant, sub, error = %failure, dir = %dir.display(), "spilling refreshed tokens failed: they live in memory only");
        }
    }

    /// Forgets a spilled pair (written to the store, or obsolete).
    pub fn remove_spilled(&self, tenant: &str, sub: &str) {
        let Some(dir) = &self.spill_dir else { return };
        let path = Store::spill_path(dir, tenant, sub);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(failure) if failure.kind() == std::io::ErrorKind::NotFound => {}
            Err(failure) => warn!(tenant, sub, error = %failure, "removing a spilled pair failed"),
        }
    }

    /// Every pair in the spill directory. A file that cannot be read or
    /// opened (a key removed from the config) is logged and left in place.
    pub fn spilled_pairs(&self) -> Vec<SpilledPair> {
        let Some(dir) = &self.spill_dir else { return Vec::new() };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(failure) => {
                warn!(dir = %dir.display(), error = %failure, "cannot read the spill directory");
                return Vec::new();
            }
        };
        let mut pairs = Vec::new();
        for path in entries.flatten().map(|entry| entry.path()) {
            if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
                continue;
            }
            match self.read_spilled(&path) {
                Some(pair) => pairs.push(pair),
                None => error!(file = %path.display(), "a spilled pair cannot be read; left in place"),
            }
        }
        pairs
    }

    /// Re-seals spilled pairs made under another key than the current one
    /// (`calgate rekey`); returns how many. Unreadable files are left (and
    /// logged by the next start).
    pub fn rekey_spilled(&self) -> u64 {
        let Some(dir) = &self.spill_dir else { return 0 };
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        let current = self.cipher().current_key_id();
        let mut rekeyed = 0;
        for path in entries.flatten().map(|entry| entry.path()) {
            if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
                continue;
            }
            let old_key = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<SpillFile>(&bytes).ok())
                .is_some_and(|file| file.key_id != current);
            if let (true, Some(pair)) = (old_key, self.read_spilled(&path)) {
                self.spill_pair(&pair.tenant, &pair.sub, pair.version, &pair.tokens);
                rekeyed += 1;
            }
        }
        rekeyed
    }

    fn read_spilled(&self, path: &Path) -> Option<SpilledPair> {
        let file: SpillFile = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let cipher = self.cipher();
        let open = |blob: &str, purpose| {
            let blob = STANDARD.decode(blob).ok()?;
            cipher
                .open(&file.key_id, &blob, &binding(&file.tenant, &file.sub, purpose))
                .ok()
        };
        let tokens = Tokens {
            access_token: open(&file.access, SPILL_ACCESS)?,
            refresh_token: open(&file.refresh, SPILL_REFRESH)?,
            access_expires_at: OffsetDateTime::from_unix_timestamp(file.access_expires_at).ok()?,
        };
        Some(SpilledPair {
            tenant: file.tenant,
            sub: file.sub,
            version: file.version,
            tokens,
        })
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never half of either: a synced temporary file renamed over it, then
/// the directory synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` if needed and proves a file can be written, synced and
/// removed there.
pub(super) fn check_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    write_atomically(&probe, b"calgate")?;
    std::fs::remove_file(&probe)
}
