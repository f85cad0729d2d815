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

/// One user's writes a claim takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PickedUser {
    pub(super) tenant: String,
    pub(super) sub: String,
    /// Taken from the writes due that were looked at.
    pub(super) write_ids: Vec<String>,
    /// How many more of this user's due writes the claim could take (its
    /// `per_user` not reached, room left): the store looks for them.
    pub(super) more: usize,
}

/// A tenant not in the claim's rooms (one removed from the config): its
/// writes are claimed one at a time, to be settled.
const UNLISTED: ClaimRoom = ClaimRoom {
    writes: usize::MAX,
    per_user: 1,
};

/// One user's due writes: (sub, write ids).
type UserWrites = (String, Vec<String>);

/// The users whose writes to claim from `due` (oldest first), at most
/// `limit` writes in all, in delivery order.
pub(super) fn pick(due: Vec<Due>, rooms: &HashMap<String, ClaimRoom>, limit: usize) -> Vec<PickedUser> {
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
    let mut picked: Vec<PickedUser> = Vec::new();
    let mut count = 0;
    loop {
        let mut took_any = false;
        for ((tenant, users), left) in tenants.iter_mut().zip(&mut left) {
            if *left == 0 || count >= limit {
                continue;
            }
            let Some((sub, writes)) = users.pop_front() else {
                continue;
            };
            let per_user = rooms.get(tenant).copied().unwrap_or(UNLISTED).per_user.max(1);
            let take = writes.len().min(per_user).min(*left).min(limit - count);
            // The user's batch is filled before the next user is picked: what
            // the writes looked at lack, the store looks for.
            let more = (per_user - take).min(*left - take).min(limit - count - take);
            *left -= take + more;
            count += take + more;
            let user = PickedUser {
                tenant: tenant.clone(),
                sub,
                write_ids: writes.into_iter().take(take).collect(),
                more,
            };
            picked.push(user);
            took_any = true;
        }
        if !took_any {
            break;
        }
    }
    picked
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

    /// The write ids picked, in order.
    fn ids(picked: Vec<PickedUser>) -> Vec<String> {
        picked.into_iter().flat_map(|user| user.write_ids).collect()
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
            ids(pick(writes.clone(), &rooms, 100)),
            ["a1", "a3", "b1", "a2", "a5", "b2"],
            "ada's first two, then cy's, bob's two, di's; ada's third waits for the next claim"
        );
        assert_eq!(ids(pick(writes.clone(), &rooms, 3)), ["a1", "a3", "b1"]);
        let tight = HashMap::from([("a".to_owned(), room(1, 5)), ("b".to_owned(), room(0, 5))]);
        assert_eq!(ids(pick(writes, &tight, 100)), ["a1"], "within each tenant's room");
    }

    #[test]
    fn a_tenant_no_longer_configured_is_claimed_one_write_at_a_time() {
        let writes = due(&[("x1", "gone", "ada"), ("x2", "gone", "ada")]);
        assert_eq!(ids(pick(writes, &HashMap::new(), 10)), ["x1"], "x2 in the next claim");
    }

    #[test]
    fn each_user_picked_has_its_batch_filled_before_the_next_is_picked() {
        // The oldest writes due are of three users, one each.
        let writes = due(&[("a1", "a", "ada"), ("a2", "a", "bob"), ("b1", "b", "cy")]);
        let rooms = HashMap::from([("a".to_owned(), room(7, 5)), ("b".to_owned(), room(100, 5))]);
        let more =
            |picked: Vec<PickedUser>| -> Vec<(String, usize)> { picked.into_iter().map(|u| (u.sub, u.more)).collect() };
        // ada may take 4 more, cy 4 more, bob only what is left of a's 7 (1): 12 in all.
        assert_eq!(
            more(pick(writes.clone(), &rooms, 12)),
            [("ada".into(), 4), ("cy".into(), 4), ("bob".into(), 1)]
        );
        // A claim for one request's worth takes one user's batch, not five users' first writes.
        assert_eq!(more(pick(writes, &rooms, 5)), [("ada".into(), 4)]);
    }
}
