//! Operator commands that work on the store while replicas serve:
//! `calgate rekey`, `calgate purge-tenant`, `calgate audit`
//! (docs/operations.md). Progress goes to stderr, results to stdout; each
//! returns an error (exit 1) when its job is not done.

use std::io::Write;

use anyhow::{Context, bail};
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use crate::{
    config::Settings,
    domain::audit::{Actor, AuditEntry, AuditKind, AuditRecord},
    domain::audit_chain::SignedHead,
    server::App,
    store::{AuditQuery, Store},
};

/// Audit rows read per page.
const AUDIT_PAGE: i64 = 500;

async fn connect(settings: &Settings) -> anyhow::Result<Store> {
    Ok(Store::connect(&settings.store, &settings.encryption_keys).await?)
}

/// `calgate rekey`: re-seals everything under the first configured key.
pub async fn rekey(settings: Settings) -> anyhow::Result<()> {
    let store = connect(&settings).await?;
    let current = store.key_ids().remove(0);
    eprintln!("rekey: sealing everything under `{current}`");
    let progress = store
        .rekey(|progress| {
            eprintln!(
                "rekey: {} grants re-sealed, {} rewritten meanwhile (taken again), {} unreadable",
                progress.total(),
                progress.moved,
                progress.unreadable.len()
            );
        })
        .await?;
    let operator = Actor::operator();
    for (tenant, count) in &progress.rekeyed {
        let entry = AuditEntry {
            kind: AuditKind::KeysRotated,
            sub: None,
            user_ref: None,
            actor: &operator,
            detail: format!("{count} grants re-sealed under `{current}`"),
            ids_erased: false,
        };
        store.record_audit(tenant, &entry).await?;
    }
    for (tenant, sub, key_id) in &progress.unreadable {
        eprintln!("rekey: tenant {tenant} grant {sub}: sealed under `{key_id}`, which no configured key opens");
    }
    let remaining = store.count_under_old_keys().await?;
    println!(
        "{}",
        json!({
            "key_id": current,
            "grants_rekeyed": progress.total(),
            "queued_writes_rekeyed": progress.queued_writes,
            "spilled_pairs_rekeyed": progress.spilled,
            "audit_key_rekeyed": progress.audit_key,
            "remaining_under_other_keys": remaining,
        })
    );
    if remaining > 0 {
        bail!(
            "{remaining} ciphertexts are still under another key than `{current}`: keep the old keys configured \
             and run `calgate rekey` again"
        );
    }
    Ok(())
}

/// `calgate purge-tenant`: offboards a tenant.
pub async fn purge_tenant(settings: Settings, tenant_id: &str) -> anyhow::Result<()> {
    let app = App::build(settings).await?;
    let tenant = app.tenant(tenant_id).with_context(|| {
        format!(
            "tenant `{tenant_id}` is not configured: purge-tenant revokes its grants with its Cronofy client \
             credentials, so keep the tenant in the config (without API keys) until the purge is done"
        )
    })?;
    eprintln!("purge-tenant: revoking {tenant_id}'s grants at Cronofy");
    let purged = app
        .services()
        .erasure
        .purge_tenant(&tenant, &Actor::operator(), |done, total| {
            if done == total || done % 100 == 0 {
                eprintln!("purge-tenant: {done}/{total} grants revoked or queued");
            }
        })
        .await?;
    println!(
        "{}",
        json!({
            "tenant": tenant_id,
            "grants_deleted": purged.rows.grants,
            "other_rows_deleted": purged.rows.other_rows,
            "audit_rows_pseudonymised": purged.rows.audit_rows_pseudonymised,
            "revoked_at_cronofy": purged.revoked,
            "revocations_pending": purged.revoke_pending.len(),
            "left_to_other_tenants": purged.left_to_other_tenants,
            "erasures_pending": purged.erasures_pending.len(),
            "queued_writes_dropped": purged.queued_writes_dropped,
        })
    );
    if !purged.erasures_pending.is_empty() {
        bail!(
            "{} ForgetUser erasures still wait for Cronofy to apply the deletes it accepted: their grants are kept \
             (hidden, not revoked) until the events are seen gone; a serving replica's erasure worker keeps trying \
             — run purge-tenant again later",
            purged.erasures_pending.len()
        );
    }
    if !purged.revoke_pending.is_empty() {
        bail!(
            "{} grants could not be revoked at Cronofy: everything else is erased; their subs wait in the \
             revocation queue (a serving replica retries them) — run purge-tenant again to retry now",
            purged.revoke_pending.len()
        );
    }
    Ok(())
}

/// What `calgate audit` does beside printing rows.
#[derive(Debug, Clone, Default)]
pub struct AuditCheck {
    /// Check the tenant's whole chain (`--verify`).
    pub verify: bool,
    /// Rows up to this one may carry plain hashes: they were recorded before
    /// calgate keyed its chains (`--unkeyed-through`).
    pub unkeyed_through: i64,
    /// A head printed by `--head` earlier, kept elsewhere: the chain must
    /// still hold it (`--expect-head FILE`).
    pub expect_head: Option<std::path::PathBuf>,
    /// Print the chain's signed head instead of its rows (`--head`).
    pub head: bool,
}

/// `calgate audit`: prints a tenant's audit rows (or, with `--head`, its
/// signed head); `verify` checks its chain.
pub async fn audit(settings: Settings, tenant: &str, query: AuditQuery, check: AuditCheck) -> anyhow::Result<()> {
    let store = connect(&settings).await?;
    let mut out = std::io::stdout().lock();
    if check.head {
        let head = store.signed_audit_head(tenant).await?;
        writeln!(out, "{}", serde_json::to_string(&head)?)?;
        return Ok(());
    }
    let mut after = 0;
    loop {
        let page = store.audit_page(tenant, &query, after, AUDIT_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for row in &page {
            writeln!(out, "{}", audit_line(row))?;
        }
    }
    out.flush()?;
    if check.verify {
        let expect_head = match &check.expect_head {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| anyhow::anyhow!("reading --expect-head {}: {error}", path.display()))?;
                let head: SignedHead = serde_json::from_str(text.trim())
                    .map_err(|_| anyhow::anyhow!("--expect-head {} is not a head printed by --head", path.display()))?;
                Some(head)
            }
        };
        let report = store
            .verify_audit_chain(tenant, check.unkeyed_through, expect_head.as_ref())
            .await?;
        match report.broken {
            None => eprintln!(
                "audit: {tenant}'s chain verifies: {} rows, head {}",
                report.checked,
                if report.head_hash.is_empty() {
                    "(empty)"
                } else {
                    &report.head_hash
                }
            ),
            Some(broken) => bail!("{tenant}'s audit chain is broken: {broken}"),
        }
    }
    Ok(())
}

/// One row as a JSON line.
fn audit_line(row: &AuditRecord) -> serde_json::Value {
    json!({
        "time": row.recorded_at.format(&Rfc3339).unwrap_or_default(),
        "tenant": row.tenant,
        "seq": row.seq,
        "kind": row.kind,
        "sub": row.sub,
        "user_ref": row.user_ref,
        "sub_hash": row.sub_hash,
        "user_ref_hash": row.user_ref_hash,
        "actor": row.actor,
        "request_id": row.request_id,
        "detail": row.detail,
        "hash": row.hash,
    })
}
