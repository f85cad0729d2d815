//! Which due queued writes one claim takes, and in what order: tenants in
//! turn (a tenant with a long queue does not hold the others back), each
//! turn one user's ready writes together (they go in one batch request),
//! within what each tenant may take now.

use std::collections::{HashMap, VecDeque};

/// One queued write due for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Due {
    pub(super) write_id: String,
    pub(super) tenant: String,
    pub(super) sub: String,
}

/// What one tenant's writes a claim may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimRoom {
    /// Writes in all.
    pub writes: usize,
    /// Writes of one user, taken together (one batch request).
    pub per_user: usize,
}

/// A tenant not in the claim's rooms (one removed from the config): its
/// writes are claimed one at a time, to be settled.
const UNLISTED: ClaimRoom = ClaimRoom {
    writes: usize::MAX,
    per_user: 1,
};

/// One user's due writes: (sub, write ids).
type UserWrites = (String, Vec<String>);

/// The write ids to claim from `due` (oldest first), at most `limit`.
pub(super) fn pick(due: Vec<Due>, rooms: &HashMap<String, ClaimRoom>, limit: usize) -> Vec<String> {
    // Each tenant's users in the order their oldest write came due, each with its writes.
    let mut tenants: Vec<(String, VecDeque<UserWrites>)> = Vec::new();
    for write in due {
        let index = match tenants.iter().position(|(tenant, _)| *tenant == write.tenant) {
            Some(index) => index,
            None => {
                tenants.push((write.tenant.clone(), VecDeque::new()));
                tenants.len() - 1
            }
        };
        let users = &mut tenants[index].1;
        match users.iter_mut().find(|(sub, _)| *sub == write.sub) {
            Some((_, writes)) => writes.push(write.write_id),
            None => users.push_back((write.sub, vec![write.write_id])),
        }
    }
    let mut left: Vec<usize> = tenants
        .iter()
        .map(|(tenant, _)| rooms.get(tenant).copied().unwrap_or(UNLISTED).writes)
        .collect();
    let mut picked = Vec::new();
    loop {
        let mut took_any = false;
        for ((tenant, users), left) in tenants.iter_mut().zip(&mut left) {
            if *left == 0 || picked.len() >= limit {
                continue;
            }
            let Some((_, writes)) = users.pop_front() else { continue };
            let per_user = rooms.get(tenant).copied().unwrap_or(UNLISTED).per_user.max(1);
            let take = writes.len().min(per_user).min(*left).min(limit - picked.len());
            picked.extend(writes.into_iter().take(take));
            *left -= take;
            took_any = true;
        }
        if !took_any {
            return picked;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(list: &[(&str, &str, &str)]) -> Vec<Due> {
        list.iter()
            .map(|(write_id, tenant, sub)| Due {
                write_id: (*write_id).into(),
                tenant: (*tenant).into(),
                sub: (*sub).into(),
            })
            .collect()
    }

    fn room(writes: usize, per_user: usize) -> ClaimRoom {
        ClaimRoom { writes, per_user }
    }

    #[test]
    fn tenants_take_turns_and_a_users_writes_go_together() {
        let writes = due(&[
            ("a1", "a", "ada"),
            ("a2", "a", "bob"),
            ("a3", "a", "ada"),
            ("b1", "b", "cy"),
            ("a4", "a", "ada"),
            ("b2", "b", "di"),
            ("a5", "a", "bob"),
        ]);
        let rooms = HashMap::from([("a".to_owned(), room(100, 2)), ("b".to_owned(), room(100, 5))]);
        assert_eq!(
            pick(writes.clone(), &rooms, 100),
            ["a1", "a3", "b1", "a2", "a5", "b2"],
            "ada's first two, then cy's, bob's two, di's; ada's third waits for the next claim"
        );
        assert_eq!(pick(writes.clone(), &rooms, 3), ["a1", "a3", "b1"]);
        let tight = HashMap::from([("a".to_owned(), room(1, 5)), ("b".to_owned(), room(0, 5))]);
        assert_eq!(pick(writes, &tight, 100), ["a1"], "within each tenant's room");
    }

    #[test]
    fn a_tenant_no_longer_configured_is_claimed_one_write_at_a_time() {
        let writes = due(&[("x1", "gone", "ada"), ("x2", "gone", "ada")]);
        assert_eq!(pick(writes, &HashMap::new(), 10), ["x1"], "x2 in the next claim");
    }
}
