//! Recently used access tokens, decrypted, so that a busy grant costs no
//! store read and no decryption per call (quick_cache: bounded, sharded, no
//! allocation per lookup).
//!
//! Two maps: user_ref → sub, and sub → (access token, version, expiry, kind).
//! An entry lives `ttl` at most, and is only served while its token is outside
//! the refresh window (the caller checks that with its own clock). This
//! process drops entries itself whenever it changes a grant (new tokens,
//! revocation, a 401 from Cronofy, a re-bound user_ref). Changes made by
//! another replica are seen within `ttl`; a token Cronofy no longer accepts is
//! caught earlier, by the 401 it earns.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use quick_cache::{Equivalent, sync::Cache};
use secrecy::SecretString;
use time::OffsetDateTime;

use super::grant::{AccessMode, GrantKind, GrantSelector};

/// (tenant, sub) or (tenant, user_ref).
type Key = (String, String);

/// A borrowed [`Key`], so that lookups allocate nothing. Hashes as the tuple does.
struct KeyRef<'a>(&'a str, &'a str);

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// A grant's usable access token as last read from the store.
#[derive(Clone)]
pub(super) struct CachedToken {
    pub(super) sub: String,
    pub(super) token: SecretString,
    pub(super) version: i64,
    pub(super) access_expires_at: OffsetDateTime,
    pub(super) kind: GrantKind,
    pub(super) access_mode: AccessMode,
    /// The grant's disconnected profiles, checked by writes.
    pub(super) gate: std::sync::Arc<super::write_gate::WriteGate>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("sub", &self.sub)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A value and when it was cached.
#[derive(Debug, Clone)]
struct Stamped<T> {
    value: T,
    at: Instant,
}

/// The cache; with a zero ttl it holds nothing.
pub(super) struct TokenCache {
    ttl: Duration,
    refs: Option<Cache<Key, Stamped<String>>>,
    tokens: Option<Cache<Key, Stamped<Arc<CachedToken>>>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// Up to `entries` grants, each for `ttl` at most.
    pub(super) fn new(ttl: Duration, entries: u64) -> TokenCache {
        let entries = usize::try_from(entries).unwrap_or(usize::MAX);
        if ttl.is_zero() || entries == 0 {
            return TokenCache {
                ttl,
                refs: None,
                tokens: None,
            };
        }
        TokenCache {
            ttl,
            refs: Some(Cache::new(entries)),
            tokens: Some(Cache::new(entries)),
        }
    }

    fn fresh<T: Clone>(&self, stamped: Option<Stamped<T>>) -> Option<T> {
        stamped.filter(|s| s.at.elapsed() < self.ttl).map(|s| s.value)
    }

    /// The cached token of the selected grant, if any.
    pub(super) fn get(&self, tenant: &str, selector: &GrantSelector) -> Option<Arc<CachedToken>> {
        let tokens = self.tokens.as_ref()?;
        match selector {
            GrantSelector::Sub(sub) => self.fresh(tokens.get(&KeyRef(tenant, sub))),
            GrantSelector::UserRef(user_ref) => {
                let sub = self.fresh(self.refs.as_ref()?.get(&KeyRef(tenant, user_ref)))?;
                self.fresh(tokens.get(&KeyRef(tenant, &sub)))
            }
            // Never cached: each attempt of an erasure reads the store.
            GrantSelector::Erasing(_) => None,
        }
    }

    /// Remembers a grant's token as read through `selector`.
    pub(super) fn put(&self, tenant: &str, selector: &GrantSelector, token: CachedToken) {
        let (Some(refs), Some(tokens)) = (&self.refs, &self.tokens) else {
            return;
        };
        if matches!(selector, GrantSelector::Erasing(_)) {
            // A caller's lookup by sub must not find it here.
            return;
        }
        let at = Instant::now();
        if let GrantSelector::UserRef(user_ref) = selector {
            let sub = Stamped {
                value: token.sub.clone(),
                at,
            };
            refs.insert((tenant.to_owned(), user_ref.clone()), sub);
        }
        let key = (tenant.to_owned(), token.sub.clone());
        tokens.insert(
            key,
            Stamped {
                value: Arc::new(token),
                at,
            },
        );
    }

    /// Forgets a grant's token (its tokens or status changed).
    pub(super) fn forget_grant(&self, tenant: &str, sub: &str) {
        if let Some(tokens) = &self.tokens {
            tokens.remove(&KeyRef(tenant, sub));
        }
    }

    /// Forgets where a user_ref points (it was bound anew).
    pub(super) fn forget_user_ref(&self, tenant: &str, user_ref: &str) {
        if let Some(refs) = &self.refs {
            refs.remove(&KeyRef(tenant, user_ref));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(sub: &str, version: i64) -> CachedToken {
        CachedToken {
            sub: sub.into(),
            token: SecretString::from(format!("token-{version}")),
            version,
            access_expires_at: OffsetDateTime::now_utc(),
            kind: GrantKind::User,
            access_mode: AccessMode::ReadWrite,
            gate: Default::default(),
        }
    }

    #[test]
    fn user_refs_and_subs_reach_the_same_entry_until_forgotten() {
        let cache = TokenCache::new(Duration::from_secs(60), 100);
        let by_ref = GrantSelector::UserRef("u1".into());
        let by_sub = GrantSelector::Sub("acc_1".into());
        cache.put("acme", &by_ref, token("acc_1", 3));
        assert_eq!(cache.get("acme", &by_ref).map(|t| t.version), Some(3));
        assert_eq!(cache.get("acme", &by_sub).map(|t| t.version), Some(3));
        assert!(cache.get("globex", &by_sub).is_none(), "tenants never share entries");

        cache.forget_grant("acme", "acc_1");
        assert!(cache.get("acme", &by_ref).is_none());
        assert!(cache.get("acme", &by_sub).is_none());

        cache.put("acme", &by_ref, token("acc_1", 4));
        cache.forget_user_ref("acme", "u1");
        assert!(
            cache.get("acme", &by_ref).is_none(),
            "a re-bound user_ref is read again"
        );
        assert_eq!(cache.get("acme", &by_sub).map(|t| t.version), Some(4));
    }

    #[test]
    fn a_zero_ttl_turns_the_cache_off() {
        let cache = TokenCache::new(Duration::ZERO, 100);
        let by_sub = GrantSelector::Sub("acc_1".into());
        cache.put("acme", &by_sub, token("acc_1", 1));
        assert!(cache.get("acme", &by_sub).is_none());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = TokenCache::new(Duration::from_millis(30), 100);
        let by_sub = GrantSelector::Sub("acc_1".into());
        cache.put("acme", &by_sub, token("acc_1", 1));
        assert!(cache.get("acme", &by_sub).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("acme", &by_sub).is_none());
    }
}
