//! Push notification channels and the reads a notification leads to:
//! `POST`/`GET`/`DELETE /v1/channels` [docs: /developers/api/push-notifications/create-channel,
//! /list-channels, /close-channel; cronofy-ruby `spec/lib/cronofy/client_spec.rb`: 200
//! `{"channel": …}`, list 200 `{"channels": […]}`, close 202], `GET /v1/events` [docs:
//! /developers/api/events/read-events] and `GET /v1/userinfo` [docs:
//! /developers/api/identity/userinfo].

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    CronofyClient, CronofyError, Endpoints, Host, UserInfo,
    parse::json,
    response::{body_bytes, check_status, decode, expect_success, send},
};

#[derive(Deserialize)]
struct ChannelResponse {
    channel: CreatedChannel,
}

#[derive(Deserialize)]
struct CreatedChannel {
    channel_id: String,
}

#[derive(Deserialize)]
struct ChannelList {
    channels: Vec<CreatedChannel>,
}

/// One event of `GET /v1/events`.
#[derive(Debug, Clone, Deserialize)]
pub struct ReadEvent {
    /// Its calendar.
    pub calendar_id: String,
    /// The application's id; present on managed events only.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Title.
    #[serde(default)]
    pub summary: Option<String>,
    /// `YYYY-MM-DD` or an RFC 3339 time in the requested tzid.
    #[serde(default)]
    pub start: Option<String>,
    /// As `start`.
    #[serde(default)]
    pub end: Option<String>,
    /// Deleted (only with `include_deleted=true`).
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Deserialize)]
struct ReadEventsResponse {
    #[serde(default)]
    events: Vec<ReadEvent>,
    #[serde(default)]
    pages: Option<Pages>,
}

#[derive(Deserialize)]
struct Pages {
    #[serde(default)]
    next_page: Option<String>,
}

impl CronofyClient {
    /// `POST /v1/channels` with the user's token: notifications of changes to
    /// the application's own events (`only_managed`) go to `callback_url`.
    /// Returns Cronofy's channel id.
    pub async fn create_channel(
        &self,
        endpoints: &Endpoints,
        access_token: &SecretString,
        callback_url: &str,
    ) -> Result<String, CronofyError> {
        let url = endpoints.url(Host::Api, &["v1", "channels"]);
        let body = serde_json::json!({
            "callback_url": callback_url,
            "filters": { "only_managed": true },
        });
        let request = self
            .http
            .post(url)
            .bearer_auth(access_token.expose_secret())
            .json(&body);
        let response = check_status(send("create_channel", request).await?).await?;
        let created: ChannelResponse = decode(response, "channels").await?;
        Ok(created.channel.channel_id)
    }

    /// `GET /v1/channels` with the user's token: the ids of the account's
    /// open channels (of this application: the token is the application's).
    pub async fn list_channels(
        &self,
        endpoints: &Endpoints,
        access_token: &SecretString,
    ) -> Result<Vec<String>, CronofyError> {
        let url = endpoints.url(Host::Api, &["v1", "channels"]);
        let request = self.http.get(url).bearer_auth(access_token.expose_secret());
        let response = check_status(send("list_channels", request).await?).await?;
        let listed: ChannelList = decode(response, "channels").await?;
        Ok(listed.channels.into_iter().map(|channel| channel.channel_id).collect())
    }

    /// `DELETE /v1/channels/{channel_id}`; Cronofy answers 202.
    pub async fn close_channel(
        &self,
        endpoints: &Endpoints,
        access_token: &SecretString,
        channel_id: &str,
    ) -> Result<(), CronofyError> {
        let url = endpoints.url(Host::Api, &["v1", "channels", channel_id]);
        let request = self.http.delete(url).bearer_auth(access_token.expose_secret());
        expect_success(send("close_channel", request).await?).await
    }

    /// The first page's URL of a read of the application's own events changed
    /// since `last_modified` (RFC 3339), deleted ones included, times in UTC.
    pub fn managed_events_url(endpoints: &Endpoints, last_modified: &str) -> url::Url {
        let mut url = endpoints.url(Host::Api, &["v1", "events"]);
        url.query_pairs_mut()
            .append_pair("tzid", "Etc/UTC")
            .append_pair("only_managed", "true")
            .append_pair("include_deleted", "true")
            .append_pair("last_modified", last_modified);
        url
    }

    /// The first page's URL of a read of every live event the application
    /// manages for the account, times in UTC: with neither `from` nor `to`,
    /// "you will retrieve all the events you are managing for the account
    /// across all of time" [docs: /developers/api/events/read-events].
    pub fn all_managed_events_url(endpoints: &Endpoints) -> url::Url {
        let mut url = endpoints.url(Host::Api, &["v1", "events"]);
        url.query_pairs_mut()
            .append_pair("tzid", "Etc/UTC")
            .append_pair("only_managed", "true");
        url
    }

    /// One page of `GET /v1/events`, and the next page's URL (refused on
    /// another origin: following it would send the user's token elsewhere).
    pub async fn read_events_page(
        &self,
        endpoints: &Endpoints,
        access_token: &SecretString,
        page: &url::Url,
    ) -> Result<(Vec<ReadEvent>, Option<url::Url>), CronofyError> {
        let request = self.http.get(page.clone()).bearer_auth(access_token.expose_secret());
        let response = check_status(send("read_events", request).await?).await?;
        let body: ReadEventsResponse = json(&body_bytes(response, "events").await?, "events")?;
        let next = match body.pages.and_then(|pages| pages.next_page) {
            None => None,
            Some(next) => {
                let next = url::Url::parse(&next).map_err(|_| CronofyError::Decode { endpoint: "events" })?;
                if next.origin() != endpoints.url(Host::Api, &[]).origin() {
                    return Err(CronofyError::Decode {
                        endpoint: "events (next_page on another host)",
                    });
                }
                Some(next)
            }
        };
        Ok((body.events, next))
    }

    /// `GET /v1/userinfo`: the account's profiles and whether each is connected.
    pub async fn userinfo(&self, endpoints: &Endpoints, access_token: &SecretString) -> Result<UserInfo, CronofyError> {
        let url = endpoints.url(Host::Api, &["v1", "userinfo"]);
        let request = self.http.get(url).bearer_auth(access_token.expose_secret());
        decode(check_status(send("userinfo", request).await?).await?, "userinfo").await
    }
}
