//! What tests, the benchmark harness and the sandbox's controls do to the
//! fake from outside: shape the next authorization, inject faults, move its
//! clock, play the user, and read what calgate sent.

use std::time::Duration;

use super::*;

/// Shapes the next authorization the fake grants.
#[derive(Debug, Clone, Default)]
pub struct NextAuthorization {
    /// Reuse this existing account (Cronofy's account linking hands the same sub back).
    pub sub: Option<String>,
    /// Provider of the linked profile, e.g. `google_free_busy` for Free/Busy mode.
    pub provider_name: Option<String>,
    /// Scope granted instead of the requested one.
    pub scope: Option<String>,
}

/// How the fake answers a refresh, as far as the refresh token goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RefreshTokens {
    /// Repeat the same refresh token, which stays valid — Cronofy's documented
    /// example [docs: /developers/api/authorization/refresh-token] (the default).
    #[default]
    Echo,
    /// Issue a new refresh token and retire the old one: Cronofy "may change
    /// it" at a refresh [help centre]; a reused old one is `invalid_grant`.
    Rotate,
    /// Leave `refresh_token` out of the answer; the old one stays valid.
    Omit,
}

impl FakeCronofy {
    /// Shapes the next authorization (reuse an account, choose the provider…).
    pub fn set_next_authorization(&self, next: NextAuthorization) {
        self.shared.lock().next_authorization = Some(next);
    }

    /// Lifetime of access tokens issued from now on (default one hour).
    pub fn set_access_token_ttl(&self, ttl: Duration) {
        self.shared.lock().access_token_ttl = ttl;
    }

    /// What a refresh answers with for the refresh token (default: echoes it,
    /// as Cronofy's example does; tests of rotation ask for [`RefreshTokens::Rotate`]).
    pub fn set_refresh_tokens(&self, mode: RefreshTokens) {
        self.shared.lock().refresh_tokens_mode = mode;
    }

    /// From now on, a service account's token answer carries its `ser_` id as
    /// `sub` and leaves `service_account_id` out: the shape a client must
    /// still recognise as a service account.
    pub fn name_service_accounts_by_sub(&self) {
        self.shared.lock().service_accounts_by_sub = true;
    }

    /// Makes every access token issued so far expire now.
    pub fn expire_access_tokens(&self) {
        self.shared.lock().expire_access_tokens();
    }

    /// Makes a share `rate` (0..=1) of all requests meet a random fault (a 503,
    /// a 429 with Retry-After 1, or a 1.5 s stall) — for soak runs.
    pub fn set_chaos(&self, rate: f64) {
        self.shared.lock().chaos = rate.clamp(0.0, 1.0);
    }

    /// The subs revoked through `/oauth/token/revoke` by `client_id`, in order.
    pub fn revoked_subs(&self, client_id: &str) -> Vec<String> {
        self.shared
            .lock()
            .revoked
            .iter()
            .filter(|(client, _)| client == client_id)
            .map(|(_, sub)| sub.clone())
            .collect()
    }

    /// How many refreshes the fake answered for `sub` (with a refresh token it knew).
    pub fn refreshes_of(&self, sub: &str) -> usize {
        self.shared.lock().refreshes.get(sub).copied().unwrap_or_default()
    }

    /// The subs `client_id` still holds a live refresh token for (each once,
    /// sorted): after a revoke or a purge, none of the revoked accounts.
    pub fn live_refresh_token_subs(&self, client_id: &str) -> Vec<String> {
        let mut subs: Vec<String> = self
            .shared
            .lock()
            .refresh_tokens
            .values()
            .filter(|token| token.client_id == client_id)
            .map(|token| token.sub.clone())
            .collect();
        subs.sort();
        subs.dedup();
        subs
    }

    /// Revokes every token of an account, as a user disconnecting calgate would.
    pub fn revoke_account(&self, sub: &str) {
        self.shared.lock().revoke_account(sub);
    }

    /// Adds a fault; faults are consumed in the order added.
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// Drops the faults still pending.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Every request the api host received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the requests recorded so far (long benchmark runs).
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Connects a new user account without the browser round trip, for bulk
    /// set-ups such as benchmarks: its tokens are as the code exchange issues them.
    pub fn connect_account(&self, client_id: &str, scope: &str) -> ConnectedAccount {
        let mut state = self.shared.lock();
        let (sub, access_token, refresh_token) = state.connect(client_id, scope);
        let calendar_id = state
            .accounts
            .get(&sub)
            .and_then(|account| account.calendars.iter().find(|c| !c.readonly))
            .map(|c| c.calendar_id.clone())
            .unwrap_or_default();
        ConnectedAccount {
            sub,
            calendar_id,
            access_token,
            refresh_token,
            expires_in: state.access_token_ttl,
        }
    }

    /// How many requests reached `endpoint`.
    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }

    /// Open push notification channels of an account: (channel_id, callback_url).
    pub fn channels(&self, sub: &str) -> Vec<(String, String)> {
        let mut channels: Vec<(String, String)> = self
            .shared
            .lock()
            .channels
            .iter()
            .filter(|(_, channel)| channel.sub == sub)
            .map(|(id, channel)| (id.clone(), channel.callback_url.clone()))
            .collect();
        channels.sort();
        channels
    }

    /// The user changes every event the application wrote in the account, at
    /// once and without a notification: each is externally modified now.
    pub fn user_touches_all_events(&self, sub: &str) {
        if let Some(account) = self.shared.lock().accounts.get_mut(sub) {
            account.touch_all_events();
        }
    }

    /// Adds a calendar profile (say `exchange`) to the account, with one
    /// writable calendar: returns the profile's and the calendar's ids.
    pub fn add_calendar_profile(&self, sub: &str, provider: &str) -> (String, String) {
        let (profile_id, calendar_id) =
            profiles::add_profile(&self.shared, sub, provider, true).expect("the account exists");
        (profile_id, calendar_id.expect("a calendar profile's calendar"))
    }

    /// Adds a conferencing profile (say `zoom`) to the account; returns its id.
    pub fn add_conferencing_profile(&self, sub: &str, provider: &str) -> String {
        profiles::add_profile(&self.shared, sub, provider, false)
            .expect("the account exists")
            .0
    }

    /// Disconnects (or relinks) a profile added with [`Self::add_calendar_profile`]
    /// or [`Self::add_conferencing_profile`], notifying the account's channels.
    pub async fn set_profile_connected(&self, sub: &str, profile_id: &str, connected: bool) -> Vec<u16> {
        profiles::set_connected(&self.shared, sub, profile_id, connected).await
    }

    /// Closes every channel of an account without telling anyone, as Cronofy
    /// does after days of failed deliveries; returns how many were closed.
    pub fn close_channels_silently(&self, sub: &str) -> usize {
        let mut state = self.shared.lock();
        let before = state.channels.len();
        state.channels.retain(|_, channel| channel.sub != sub);
        before - state.channels.len()
    }

    /// The push notifications delivered so far, in order.
    pub fn notifications_sent(&self) -> Vec<SentNotification> {
        self.shared.lock().notifications_sent.clone()
    }

    /// Events per `GET /v1/events` page (default 100).
    pub fn set_event_page_size(&self, size: usize) {
        self.shared.lock().event_page_size = size;
    }

    /// The user deletes one of the application's events in their calendar
    /// app: Cronofy notices and sends a `change` notification to the
    /// account's channels. Returns the HTTP statuses calgate answered.
    pub async fn user_deletes_event(&self, sub: &str, calendar_id: &str, event_id: &str) -> Vec<u16> {
        controls::user_deletes_event(&self.shared, sub, calendar_id, event_id)
            .await
            .expect("the event exists")
    }

    /// The user moves one of the application's events (new `start` and `end`,
    /// RFC 3339 or dates) and may rename it; then a `change` notification.
    pub async fn user_edits_event(
        &self,
        sub: &str,
        calendar_id: &str,
        event_id: &str,
        start: &str,
        end: &str,
        summary: Option<&str>,
    ) -> Vec<u16> {
        let edit = controls::EventEdit {
            calendar_id: calendar_id.to_owned(),
            event_id: event_id.to_owned(),
            start: start.to_owned(),
            end: end.to_owned(),
            summary: summary.map(str::to_owned),
        };
        controls::user_edits_event(&self.shared, sub, edit)
            .await
            .expect("the event exists")
    }

    /// Makes change notifications carry this `changes_since` (RFC 3339), or
    /// (None) a second before the change, the default.
    pub fn pin_changes_since(&self, since: Option<&str>) {
        self.shared.lock().pinned_changes_since = since.map(str::to_owned);
    }

    /// Sends a `change` notification with `changes_since` to the account's channels.
    pub async fn notify_change(&self, sub: &str, changes_since: String) -> Vec<u16> {
        let notification = serde_json::json!({"type": "change", "changes_since": changes_since});
        channels::notify_account(self.shared.clone(), sub, notification).await
    }

    /// Sends a notification of any `type` (e.g. one calgate does not know) to the account's channels.
    pub async fn notify(&self, sub: &str, kind: &str) -> Vec<u16> {
        channels::notify_account(self.shared.clone(), sub, serde_json::json!({"type": kind})).await
    }

    /// Cronofy can no longer sync the account's profile: UserInfo shows it
    /// disconnected with a relink URL, and channels get `profile_disconnected`.
    pub async fn disconnect_profile(&self, sub: &str) -> Vec<u16> {
        controls::set_profile_connected(&self.shared, sub, false).await
    }

    /// The user relinked the profile and syncing works again: UserInfo shows
    /// it connected and `change` notifications resume.
    pub async fn reconnect_profile(&self, sub: &str) -> Vec<u16> {
        controls::set_profile_connected(&self.shared, sub, true).await
    }

    /// Where the fake sends a user to relink the account's profile.
    pub fn relink_url(&self, sub: &str) -> String {
        let profile_id = self
            .shared
            .lock()
            .accounts
            .get(sub)
            .map(|account| account.profile_id.clone())
            .unwrap_or_default();
        profiles::relink_url(&profile_id)
    }

    /// The stored event with this Cronofy `event_id`, as the JSON calgate
    /// sent, whichever application wrote it.
    pub fn event(&self, sub: &str, calendar_id: &str, event_id: &str) -> Option<serde_json::Value> {
        let state = self.shared.lock();
        let account = state.accounts.get(sub)?;
        account.events.get(&account.event_key(calendar_id, event_id)?).cloned()
    }

    /// The Cronofy `event_id`s of the account's live events in a calendar,
    /// written by application `client_id`, sorted.
    pub fn event_ids(&self, client_id: &str, sub: &str, calendar_id: &str) -> Vec<String> {
        let state = self.shared.lock();
        state.accounts.get(sub).map_or_else(Vec::new, |account| {
            account
                .events
                .keys()
                .filter(|(client, calendar, _)| client == client_id && calendar == calendar_id)
                .map(|(_, _, id)| id.clone())
                .collect()
        })
    }

    /// Number of events stored for an account.
    pub fn event_count(&self, sub: &str) -> usize {
        self.shared
            .lock()
            .accounts
            .get(sub)
            .map_or(0, |account| account.events.len())
    }

    /// The account's calendar ids: the writable primary first, then a read-only one.
    pub fn calendar_ids(&self, sub: &str) -> Vec<String> {
        let state = self.shared.lock();
        state
            .accounts
            .get(sub)
            .map(|account| account.calendars.iter().map(|c| c.calendar_id.clone()).collect())
            .unwrap_or_default()
    }

    /// Adds a busy period (someone else's event) to an account's calendar.
    pub fn add_busy_period(&self, sub: &str, calendar_id: &str, start: &str, end: &str, status: &str) {
        if let Some(account) = self.shared.lock().accounts.get_mut(sub) {
            account.busy.push(state::BusyPeriod {
                calendar_id: calendar_id.to_owned(),
                start: start.to_owned(),
                end: end.to_owned(),
                status: status.to_owned(),
            });
        }
    }

    /// How many periods one free/busy page holds (default 100).
    pub fn set_free_busy_page_size(&self, size: usize) {
        self.shared.lock().free_busy_page_size = size.max(1);
    }

    /// Whether member authorizations call back on their own (default true).
    pub fn set_member_callbacks(&self, enabled: bool) {
        self.shared.lock().member_callbacks = enabled;
    }

    /// A code for the member authorization whose callback URL names
    /// `authorization_id`, asked for while callbacks were off: what Cronofy's
    /// callback would have carried.
    pub fn member_code_for(&self, authorization_id: &str) -> String {
        let mut state = self.shared.lock();
        let needle = format!("authorization={authorization_id}");
        let (client_id, callback_url, scope, email) = state
            .held_callbacks
            .iter()
            .find(|(_, url, _, _)| url.contains(&needle))
            .cloned()
            .expect("a held member authorization with that id");
        state.member_code(&client_id, &callback_url, &scope, &email)
    }

    /// Callbacks delivered so far: (URL, HTTP status calgate answered).
    pub fn callbacks_sent(&self) -> Vec<(String, u16)> {
        self.shared.lock().callbacks_sent.clone()
    }

    /// Every token value ever issued (for tests proving tokens never leak).
    pub fn issued_secrets(&self) -> Vec<String> {
        self.shared.lock().issued_secrets.clone()
    }
}
