//! The chain's checks: edits, gaps, unkeyed rows, pruning marks, heads.

use super::*;
use crate::domain::audit::pseudonym;

const KEY: [u8; 32] = [3; 32];

fn row(seq: i64, prev: &str) -> AuditRecord {
    let mut row = AuditRecord {
        tenant: "acme".into(),
        seq,
        recorded_at: OffsetDateTime::from_unix_timestamp(1_800_000_000 + seq).expect("valid"),
        kind: "grant_connected".into(),
        sub: Some("acc_1".into()),
        user_ref: None,
        sub_hash: pseudonym(&[7; 32], "acme", "sub", "acc_1"),
        user_ref_hash: String::new(),
        actor: "operator".into(),
        request_id: String::new(),
        detail: String::new(),
        prev_hash: prev.into(),
        hash: String::new(),
    };
    row.hash = row.keyed_hash(&KEY);
    row
}

fn chain(n: i64) -> Vec<AuditRecord> {
    let mut rows: Vec<AuditRecord> = Vec::new();
    for seq in 1..=n {
        let prev = rows.last().map_or(String::new(), |r| r.hash.clone());
        rows.push(row(seq, &prev));
    }
    rows
}

fn mark(through: i64, hash: &str) -> PruneMark {
    let mut mark = PruneMark {
        through,
        hash: hash.to_owned(),
        recorded_at_ms: 1_000,
        pruned_at_ms: 1_000 + 400 * 86_400_000,
        retention_ms: 400 * 86_400_000,
        mac: String::new(),
    };
    if through > 0 {
        mark.mac = mark.expected_mac("acme", &KEY);
    }
    mark
}

fn verify(rows: &[AuditRecord], through: i64, pruned: &str) -> Result<u64, ChainBreak> {
    let mut verifier = ChainVerifier::new("acme", &mark(through, pruned), &KEY, 0)?;
    for row in rows {
        verifier.check(row)?;
    }
    let last = rows
        .last()
        .map_or((through, pruned.to_owned()), |r| (r.seq, r.hash.clone()));
    verifier.finish(last.0, &last.1)?;
    Ok(verifier.checked)
}

#[test]
fn an_intact_chain_verifies_even_with_ids_erased() {
    let mut rows = chain(4);
    assert_eq!(verify(&rows, 0, ""), Ok(4));
    rows[1].sub = None;
    rows[2].user_ref = None;
    assert_eq!(verify(&rows, 0, ""), Ok(4));
    // After retention removed the first two rows.
    let pruned = rows[1].hash.clone();
    assert_eq!(verify(&rows[2..], 2, &pruned), Ok(2));
}

#[test]
fn edits_removals_and_insertions_are_found() {
    let rows = chain(4);
    let mut edited = rows.clone();
    edited[2].actor = "key:000000000000".into();
    assert_eq!(verify(&edited, 0, ""), Err(ChainBreak::Edited { seq: 3 }));
    let mut removed = rows.clone();
    removed.remove(1);
    assert_eq!(verify(&removed, 0, ""), Err(ChainBreak::Gap { seq: 3 }));
    // The last row removed: only the head tells.
    let mut verifier = ChainVerifier::new("acme", &mark(0, ""), &KEY, 0).expect("no mark");
    for row in &rows[..3] {
        verifier.check(row).expect("intact so far");
    }
    assert_eq!(verifier.finish(4, &rows[3].hash), Err(ChainBreak::Gap { seq: 4 }));
    // A renumbered forgery without the right previous hash.
    let mut forged = rows.clone();
    forged[3] = row(4, "f00d");
    assert_eq!(verify(&forged, 0, ""), Err(ChainBreak::Gap { seq: 4 }));
}

#[test]
fn a_chain_rewritten_without_the_key_is_found() {
    let rows = chain(3);
    // A writer without the key recomputes every row with plain SHA-256.
    let mut forged: Vec<AuditRecord> = Vec::new();
    for row in &rows {
        let mut row = row.clone();
        row.prev_hash = forged.last().map_or(String::new(), |r| r.hash.clone());
        row.actor = "operator".into();
        row.hash = unkeyed_chain_hash(&row.fields());
        forged.push(row);
    }
    assert_eq!(verify(&forged, 0, ""), Err(ChainBreak::Unkeyed { seq: 1 }));
    // …or with a key of its own.
    let mut other_key = rows.clone();
    other_key[1].actor = "operator".into();
    other_key[1].hash = other_key[1].keyed_hash(&[4; 32]);
    other_key[2].prev_hash = other_key[1].hash.clone();
    other_key[2].hash = other_key[2].keyed_hash(&[4; 32]);
    assert_eq!(verify(&other_key, 0, ""), Err(ChainBreak::Edited { seq: 2 }));
    // Rows from before keyed chains pass only as far as the operator says.
    let mut verifier = ChainVerifier::new("acme", &mark(0, ""), &KEY, 3).expect("no mark");
    for row in &forged {
        verifier.check(row).expect("declared as predating keyed chains");
    }
}

#[test]
fn a_pruning_mark_must_be_calgates_and_honest() {
    let rows = chain(4);
    let good = mark(2, &rows[1].hash);
    assert!(ChainVerifier::new("acme", &good, &KEY, 0).is_ok());
    // The wipe: a mark claiming every row, written without the key.
    let wipe = PruneMark {
        mac: String::new(),
        ..mark(4, &rows[3].hash)
    };
    assert_eq!(
        ChainVerifier::new("acme", &wipe, &KEY, 0).err(),
        Some(ChainBreak::PruneMark {
            through: 4,
            why: "is not signed with the audit key"
        })
    );
    let mut moved = good.clone();
    moved.through = 4;
    assert!(matches!(
        ChainVerifier::new("acme", &moved, &KEY, 0),
        Err(ChainBreak::PruneMark { .. })
    ));
    let mut young = good.clone();
    young.pruned_at_ms = young.recorded_at_ms + 1_000;
    young.mac = young.expected_mac("acme", &KEY);
    assert_eq!(
        ChainVerifier::new("acme", &young, &KEY, 0).err(),
        Some(ChainBreak::PruneMark {
            through: 2,
            why: "claims rows younger than the retention"
        })
    );
}

#[test]
fn heads_are_signed() {
    let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid");
    let head = SignedHead::sign("acme", 4, "k1:ab", at, &KEY);
    assert!(head.is_signed_by(&KEY));
    assert!(!head.is_signed_by(&[4; 32]));
    let mut moved = head.clone();
    moved.seq = 3;
    assert!(!moved.is_signed_by(&KEY));
}
