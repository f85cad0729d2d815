//! Caller authentication: a bearer API key decides the tenant. Keys are
//! configured only as SHA-256 digests and compared in constant time.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::Tenant;

/// The authenticated caller of an RPC.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant the API key belongs to.
    pub tenant: Arc<Tenant>,
    /// The configured SHA-256 of the key used: the audit trail names the key
    /// by its first digits (the key itself is never kept).
    pub key_sha256: [u8; 32],
}

/// Why a caller was refused. Deliberately vague: no hint of which part was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("missing `authorization: Bearer <API key>` metadata")]
    Missing,
    /// Not a bearer credential, or an unknown key.
    #[error("API key is not valid")]
    Invalid,
}

/// Maps API keys to tenants.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: Arc<Vec<([u8; 32], Arc<Tenant>)>>,
}

/// SHA-256 of an API key, as configured in `api_key_sha256`.
pub fn hash_api_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Authenticator {
    /// Builds the table from each tenant's configured digests.
    pub fn new(tenants: impl IntoIterator<Item = (Arc<Tenant>, Vec<[u8; 32]>)>) -> Authenticator {
        let keys = tenants
            .into_iter()
            .flat_map(|(tenant, digests)| digests.into_iter().map(move |digest| (digest, tenant.clone())))
            .collect();
        Authenticator { keys: Arc::new(keys) }
    }

    /// Every tenant some key decides, once each.
    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        let mut tenants: Vec<Arc<Tenant>> = Vec::new();
        for (_, tenant) in self.keys.iter() {
            if !tenants.iter().any(|known| known.id == tenant.id) {
                tenants.push(tenant.clone());
            }
        }
        tenants
    }

    /// Authenticates the value of an `authorization` header.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let (scheme, key) = value.trim().split_once(' ').ok_or(AuthError::Invalid)?;
        if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
            return Err(AuthError::Invalid);
        }
        let digest = hash_api_key(key.trim());
        // Compare against every digest, in constant time each, so timing reveals nothing of the key.
        let mut found = None;
        for (candidate, tenant) in self.keys.iter() {
            if bool::from(candidate.ct_eq(&digest)) {
                found = Some(tenant.clone());
            }
        }
        found
            .map(|tenant| Caller {
                tenant,
                key_sha256: digest,
            })
            .ok_or(AuthError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::cronofy::{DataCenter, Endpoints, OAuthApp};

    fn tenant(id: &str) -> Arc<Tenant> {
        Arc::new(Tenant {
            id: id.into(),
            data_center: DataCenter::Us,
            app: OAuthApp {
                client_id: "c".into(),
                client_secret: SecretString::from("s".to_owned()),
                endpoints: Endpoints::new(DataCenter::Us, None, None),
            },
            redirect_uris: vec![],
            avoid_linking: true,
            callback_secrets: vec![],
            event_ids: crate::domain::event_ids::EventIds::Callers,
            app_siblings: vec![],
        })
    }

    fn authenticator() -> Authenticator {
        Authenticator::new([
            (
                tenant("acme"),
                vec![hash_api_key("key-acme-1"), hash_api_key("key-acme-2")],
            ),
            (tenant("globex"), vec![hash_api_key("key-globex")]),
        ])
    }

    #[test]
    fn the_key_alone_decides_the_tenant() {
        let auth = authenticator();
        let id = |header: &str| auth.authenticate(Some(header)).map(|c| c.tenant.id.clone());
        assert_eq!(id("Bearer key-acme-1"), Ok("acme".into()));
        assert_eq!(id("bearer key-acme-2"), Ok("acme".into()));
        assert_eq!(id("Bearer key-globex"), Ok("globex".into()));
    }

    #[test]
    fn refuses_missing_malformed_and_unknown_keys() {
        let auth = authenticator();
        assert_eq!(auth.authenticate(None).err(), Some(AuthError::Missing));
        for bad in [
            "",
            "key-acme-1",
            "Basic key-acme-1",
            "Bearer ",
            "Bearer key-acme-3",
            "Bearer KEY-ACME-1",
        ] {
            assert_eq!(auth.authenticate(Some(bad)).err(), Some(AuthError::Invalid), "{bad}");
        }
    }

    #[test]
    fn digest_matches_sha256sum() {
        // printf %s secret | sha256sum
        assert_eq!(
            hex::encode(hash_api_key("secret")),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }
}
