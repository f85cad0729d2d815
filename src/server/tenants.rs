//! The configured tenants, as the domain sees them.

use std::sync::Arc;

use super::StartError;
use crate::{config::TenantSettings, domain::Tenant, store::Store};

/// The configured tenants with their API key digests, each knowing the
/// tenants that share its Cronofy application and its event id scheme
/// (chosen once and kept in the store).
pub(super) async fn build_tenants(
    settings: &[TenantSettings],
    store: &Store,
) -> Result<Vec<(Arc<Tenant>, Vec<[u8; 32]>)>, StartError> {
    let application = |tenant: &TenantSettings| (tenant.client_id.clone(), tenant.data_center);
    let mut applications: Vec<Vec<String>> = Vec::new();
    for tenant in settings {
        let siblings = settings
            .iter()
            .filter(|other| application(other) == application(tenant))
            .map(|other| other.id.clone())
            .collect::<Vec<_>>();
        if !applications.contains(&siblings) {
            applications.push(siblings);
        }
    }
    for tenant in settings {
        for url in [&tenant.api_base_url, &tenant.app_base_url].into_iter().flatten() {
            if url.scheme() == "http" && !crate::config::is_loopback(url) {
                tracing::warn!(
                    tenant = %tenant.id,
                    host = url.host_str().unwrap_or_default(),
                    "PLAIN HTTP to Cronofy (tenants[].allow_plain_http): client secrets and tokens cross the network in clear"
                );
            }
        }
    }
    let schemes = store.resolve_event_ids(&applications).await?;
    Ok(settings
        .iter()
        .map(|settings_of| {
            let mut tenant = Tenant::from_settings(settings_of);
            tenant.app_siblings = settings
                .iter()
                .filter(|other| other.id != tenant.id && application(other) == application(settings_of))
                .map(|other| other.id.clone())
                .collect();
            if let Some(scheme) = schemes.get(&tenant.id) {
                tenant.event_ids = scheme.clone();
            }
            (Arc::new(tenant), settings_of.api_key_sha256.clone())
        })
        .collect())
}
