//! The fake's memory: clients, codes, accounts, tokens, faults, requests.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use rand::{Rng, distr::Alphanumeric};

pub(super) use super::event_log::{ChangedBy, EventRecord};
use super::faults::{Endpoint, Fault};
use super::profiles::OtherProfile;
pub use super::{
    hooks::{NextAuthorization, RefreshTokens},
    recorded::{RecordedRequest, SentNotification, busiest_window},
};

#[derive(Debug, Clone)]
pub(super) struct Calendar {
    pub(super) calendar_id: String,
    pub(super) name: String,
    pub(super) readonly: bool,
    pub(super) primary: bool,
}

#[derive(Debug)]
pub(crate) struct Account {
    pub(super) account_id: String,
    pub(super) profile_id: String,
    pub(super) profile_name: String,
    pub(super) provider_name: String,
    pub(super) service_account: bool,
    pub(super) calendars: Vec<Calendar>,
    /// Each application's own events: Cronofy keys a managed event by
    /// application, calendar and `event_id` [docs: /developers/api/events/upsert-event].
    pub(super) events: BTreeMap<EventKey, serde_json::Value>,
    /// When each event was last changed, and the body of those deleted (what
    /// `GET /v1/events` reports with `last_modified` and `include_deleted`).
    pub(super) event_log: BTreeMap<EventKey, EventRecord>,
    /// Busy periods of other people's events (what free/busy reports).
    pub(super) busy: Vec<BusyPeriod>,
    /// Whether Cronofy can sync the profile (UserInfo's `profile_connected`).
    pub(super) profile_connected: bool,
    /// Profiles beyond the one linked at connection: more calendar profiles
    /// (their calendars are in `calendars` too) and conferencing profiles.
    pub(super) other_profiles: Vec<OtherProfile>,
}

/// A managed event's key: (client_id, calendar_id, event_id). Two
/// applications writing one `event_id` into one calendar write two events.
pub(super) type EventKey = (String, String, String);

/// A push notification channel (`POST /v1/channels`).
#[derive(Debug, Clone)]
pub(super) struct Channel {
    pub(super) client_id: String,
    pub(super) sub: String,
    pub(super) callback_url: String,
    pub(super) filters: serde_json::Value,
}

/// A period `GET /v1/free_busy` reports.
#[derive(Debug, Clone)]
pub(super) struct BusyPeriod {
    pub(super) calendar_id: String,
    pub(super) start: String,
    pub(super) end: String,
    pub(super) status: String,
}

#[derive(Debug)]
pub(super) struct PendingCode {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) sub: String,
    pub(super) scope: String,
}

#[derive(Debug)]
pub(super) struct AccessToken {
    pub(super) client_id: String,
    pub(super) sub: String,
    pub(super) scope: String,
    pub(super) expires_at: Instant,
}

#[derive(Debug)]
pub(super) struct RefreshToken {
    pub(super) client_id: String,
    pub(super) sub: String,
    pub(super) scope: String,
}

/// What a free/busy `next_page` token stands for.
#[derive(Debug)]
pub(super) struct PageToken {
    /// The account that read the first page; no other may follow.
    pub(super) sub: String,
    /// The first page's query.
    pub(super) query: Vec<(String, String)>,
    /// The page the token reads.
    pub(super) page: usize,
}

/// Everything the fake remembers.
#[derive(Debug)]
pub(crate) struct State {
    pub(super) clients: HashMap<String, String>,
    /// Registered redirect URIs of clients in production mode.
    pub(super) redirect_uris: HashMap<String, Vec<String>>,
    pub(super) codes: HashMap<String, PendingCode>,
    pub(super) accounts: HashMap<String, Account>,
    pub(super) access_tokens: HashMap<String, AccessToken>,
    pub(super) refresh_tokens: HashMap<String, RefreshToken>,
    /// The share of requests (0..=1) that meet a random fault: a 503, a 429
    /// with Retry-After 1, or a 1.5 s stall (soak runs).
    pub(super) chaos: f64,
    /// Revocations made through `/oauth/token/revoke`: (client_id, sub).
    pub(super) revoked: Vec<(String, String)>,
    /// Refreshes answered per sub (a refresh token Cronofy knew).
    pub(super) refreshes: HashMap<String, usize>,
    pub(super) next_authorization: Option<NextAuthorization>,
    pub(super) access_token_ttl: Duration,
    pub(super) refresh_tokens_mode: RefreshTokens,
    /// Service accounts' token answers name them by `sub` (their `ser_` id)
    /// instead of `service_account_id` ([`FakeCronofy::name_service_accounts_by_sub`]).
    pub(super) service_accounts_by_sub: bool,
    pub(super) faults: Vec<Fault>,
    pub(super) requests: Vec<RecordedRequest>,
    pub(super) issued_secrets: Vec<String>,
    pub(super) free_busy_page_size: usize,
    /// Free/busy page tokens.
    pub(super) free_busy_pages: HashMap<String, PageToken>,
    /// Members' accounts by email (Enterprise Connect).
    pub(super) members: HashMap<String, String>,
    /// Whether member authorizations call back on their own (default true).
    pub(super) member_callbacks: bool,
    /// Callbacks delivered: (URL, HTTP status calgate answered).
    pub(super) callbacks_sent: Vec<(String, u16)>,
    /// Member authorizations asked for while callbacks were off:
    /// (client_id, callback_url, scope, email).
    pub(super) held_callbacks: Vec<(String, String, String, String)>,
    /// Push notification channels by id.
    pub(super) channels: HashMap<String, Channel>,
    /// Push notifications delivered, in order.
    pub(super) notifications_sent: Vec<SentNotification>,
    /// Read-events page tokens.
    pub(super) event_pages: HashMap<String, PageToken>,
    /// Events per read-events page.
    pub(super) event_page_size: usize,
    /// `changes_since` of change notifications, when a test pins it.
    pub(super) pinned_changes_since: Option<String>,
    /// Bulk deletes accepted (202) and not applied yet.
    pub(super) queued_deletes: super::deletes::QueuedDeletes,
    next_id: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            clients: HashMap::new(),
            redirect_uris: HashMap::new(),
            codes: HashMap::new(),
            accounts: HashMap::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            revoked: Vec::new(),
            refreshes: HashMap::new(),
            chaos: 0.0,
            next_authorization: None,
            access_token_ttl: Duration::from_secs(3600),
            refresh_tokens_mode: RefreshTokens::Echo,
            service_accounts_by_sub: false,
            faults: Vec::new(),
            requests: Vec::new(),
            issued_secrets: Vec::new(),
            free_busy_page_size: 100,
            free_busy_pages: HashMap::new(),
            members: HashMap::new(),
            member_callbacks: true,
            callbacks_sent: Vec::new(),
            held_callbacks: Vec::new(),
            channels: HashMap::new(),
            notifications_sent: Vec::new(),
            event_pages: HashMap::new(),
            event_page_size: 100,
            pinned_changes_since: None,
            queued_deletes: Default::default(),
            next_id: 0,
        }
    }
}

/// 32 random ASCII characters, the documented shape of codes and tokens.
pub(super) fn random_token() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

impl State {
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Creates the account an authorization links (or reuses the one asked for).
    pub(super) fn authorize(&mut self, client_id: &str, redirect_uri: &str, scope: &str, enterprise: bool) -> String {
        let next = self.next_authorization.take().unwrap_or_default();
        let sub = match next.sub.filter(|sub| self.accounts.contains_key(sub)) {
            Some(sub) => sub,
            None => self.new_account(enterprise, next.provider_name),
        };
        let scope = next.scope.unwrap_or_else(|| scope.to_owned());
        self.issue_code(client_id, redirect_uri, sub, scope)
    }

    /// A code for a member of an organisation, redeemable with `redirect_uri`.
    pub(super) fn member_code(&mut self, client_id: &str, redirect_uri: &str, scope: &str, email: &str) -> String {
        let sub = match self.members.get(email) {
            Some(sub) => sub.clone(),
            None => {
                let sub = self.new_account(false, None);
                if let Some(account) = self.accounts.get_mut(&sub) {
                    account.profile_name = email.to_owned();
                }
                self.members.insert(email.to_owned(), sub.clone());
                sub
            }
        };
        self.issue_code(client_id, redirect_uri, sub, scope.to_owned())
    }

    /// A new account (a service account for Enterprise Connect admins) with its calendars.
    fn new_account(&mut self, enterprise: bool, provider_name: Option<String>) -> String {
        let n = self.next_id();
        let (sub, service_account) = if enterprise {
            (format!("ser_{n:024}"), true)
        } else {
            (format!("acc_{n:024}"), false)
        };
        let calendars = if service_account {
            vec![]
        } else {
            vec![
                Calendar {
                    calendar_id: format!("cal_{n}_primary"),
                    name: "Work".into(),
                    readonly: false,
                    primary: true,
                },
                Calendar {
                    calendar_id: format!("cal_{n}_holidays"),
                    name: "Holidays".into(),
                    readonly: true,
                    primary: false,
                },
            ]
        };
        self.accounts.insert(
            sub.clone(),
            Account {
                account_id: sub.clone(),
                profile_id: format!("pro_{n}"),
                profile_name: format!("user{n}@example.com"),
                provider_name: provider_name.unwrap_or_else(|| "google".into()),
                service_account,
                calendars,
                events: BTreeMap::new(),
                event_log: BTreeMap::new(),
                busy: Vec::new(),
                profile_connected: true,
                other_profiles: Vec::new(),
            },
        );
        sub
    }

    /// A new user account connected at once, as if its user had consented and
    /// the code had been redeemed: (sub, access token, refresh token).
    pub(super) fn connect(&mut self, client_id: &str, scope: &str) -> (String, String, String) {
        let sub = self.new_account(false, None);
        let (access, refresh) = self.issue(client_id, &sub, scope, true);
        (sub, access, refresh.unwrap_or_default())
    }

    /// A single-use authorization code for `sub`.
    fn issue_code(&mut self, client_id: &str, redirect_uri: &str, sub: String, scope: String) -> String {
        let code = random_token();
        self.issued_secrets.push(code.clone());
        self.codes.insert(
            code.clone(),
            PendingCode {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                sub,
                scope,
            },
        );
        code
    }

    /// Issues an access token (and, when asked, a refresh token).
    pub(super) fn issue(
        &mut self,
        client_id: &str,
        sub: &str,
        scope: &str,
        with_refresh: bool,
    ) -> (String, Option<String>) {
        let access = random_token();
        self.access_tokens.insert(
            access.clone(),
            AccessToken {
                client_id: client_id.to_owned(),
                sub: sub.to_owned(),
                scope: scope.to_owned(),
                expires_at: Instant::now() + self.access_token_ttl,
            },
        );
        self.issued_secrets.push(access.clone());
        let refresh = with_refresh.then(|| {
            let refresh = random_token();
            self.refresh_tokens.insert(
                refresh.clone(),
                RefreshToken {
                    client_id: client_id.to_owned(),
                    sub: sub.to_owned(),
                    scope: scope.to_owned(),
                },
            );
            self.issued_secrets.push(refresh.clone());
            refresh
        });
        (access, refresh)
    }

    pub(super) fn expire_access_tokens(&mut self) {
        let now = Instant::now();
        for token in self.access_tokens.values_mut() {
            token.expires_at = now;
        }
    }

    /// Ends every authorization of the account, whichever application holds it
    /// (the user revoking everything in their calendar provider).
    pub(super) fn revoke_account(&mut self, sub: &str) {
        self.access_tokens.retain(|_, token| token.sub != sub);
        self.refresh_tokens.retain(|_, token| token.sub != sub);
        // A channel lives with the authorization it was created under.
        self.channels.retain(|_, channel| channel.sub != sub);
        self.queued_deletes.drop_revoked(None, sub);
    }

    /// Ends one application's authorization of the account, every token of
    /// it — the worst reading of a revoke by token, and what a revoke by sub
    /// does [docs: /developers/api/authorization/revoke]. Other applications'
    /// authorizations of the account stay.
    pub(super) fn revoke_authorization(&mut self, client_id: &str, sub: &str) {
        self.access_tokens
            .retain(|_, token| token.sub != sub || token.client_id != client_id);
        self.refresh_tokens
            .retain(|_, token| token.sub != sub || token.client_id != client_id);
        self.channels
            .retain(|_, channel| channel.sub != sub || channel.client_id != client_id);
        // What it had asked for and Cronofy had not done yet goes with it.
        self.queued_deletes.drop_revoked(Some(client_id), sub);
    }

    /// The account behind a bearer token that is known and not expired.
    pub(super) fn bearer(&self, token: &str) -> Option<&AccessToken> {
        self.access_tokens.get(token).filter(|t| t.expires_at > Instant::now())
    }

    /// Records a request and takes the first pending fault for its endpoint.
    pub(super) fn arrive(&mut self, endpoint: Endpoint, path: &str) -> Option<Fault> {
        self.record(endpoint, path);
        let Some(index) = self.faults.iter().position(|f| f.endpoint == endpoint && f.times > 0) else {
            return self.chaos_fault(endpoint);
        };
        let fault = &mut self.faults[index];
        if fault.skip > 0 {
            fault.skip -= 1;
            return None;
        }
        fault.times -= 1;
        let taken = fault.clone();
        if fault.times == 0 {
            self.faults.remove(index);
        }
        Some(taken)
    }

    /// A random fault, for a share `chaos` of requests.
    fn chaos_fault(&self, endpoint: Endpoint) -> Option<Fault> {
        if self.chaos <= 0.0 || rand::random::<f64>() >= self.chaos {
            return None;
        }
        Some(match rand::random::<u8>() % 3 {
            0 => Fault::status(endpoint, 503),
            1 => Fault::status(endpoint, 429).retry_after("1"),
            _ => Fault::delay(endpoint, std::time::Duration::from_millis(1500)),
        })
    }

    /// Records a request without applying any fault.
    pub(super) fn record(&mut self, endpoint: Endpoint, path: &str) {
        let (query, body) = super::seen_request();
        self.requests.push(RecordedRequest {
            endpoint,
            path: path.to_owned(),
            query,
            body,
            at: Instant::now(),
        });
    }

    /// Whether Cronofy would redirect to `redirect_uri` for `client_id`: any
    /// URI in development mode, else a registered one, where `*.` in a host
    /// stands for one or more subdomains.
    pub(super) fn redirect_allowed(&self, client_id: &str, redirect_uri: &str) -> bool {
        let Some(registered) = self.redirect_uris.get(client_id) else {
            return true;
        };
        registered.iter().any(|pattern| {
            if pattern == redirect_uri {
                return true;
            }
            let (Ok(pattern), Ok(uri)) = (url::Url::parse(pattern), url::Url::parse(redirect_uri)) else {
                return false;
            };
            let (Some(wild), Some(host)) = (pattern.host_str(), uri.host_str()) else {
                return false;
            };
            let Some(domain) = wild.strip_prefix("*.") else {
                return false;
            };
            pattern.scheme() == uri.scheme()
                && pattern.port() == uri.port()
                && pattern.path() == uri.path()
                && pattern.query() == uri.query()
                && host
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        })
    }

    /// Whether `client_id` holds an authorization for `sub` (a refresh token it was issued).
    pub(super) fn client_holds(&self, client_id: &str, sub: &str) -> bool {
        self.refresh_tokens
            .values()
            .any(|token| token.client_id == client_id && token.sub == sub)
    }
}
