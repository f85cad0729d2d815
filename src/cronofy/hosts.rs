//! Cronofy's data centres and the one function that builds every Cronofy URL.

use std::{fmt, str::FromStr};

use url::Url;

/// One of Cronofy's six data centres; each is a separate environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataCenter {
    /// United States (api.cronofy.com).
    Us,
    /// United Kingdom.
    Uk,
    /// Germany.
    De,
    /// Australia.
    Au,
    /// Canada.
    Ca,
    /// Singapore.
    Sg,
}

impl DataCenter {
    /// The SDK id: `us`, `uk`, `de`, `au`, `ca`, `sg`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataCenter::Us => "us",
            DataCenter::Uk => "uk",
            DataCenter::De => "de",
            DataCenter::Au => "au",
            DataCenter::Ca => "ca",
            DataCenter::Sg => "sg",
        }
    }

    /// Host suffix: `us` is the bare host, the others add `-{id}`.
    fn host_suffix(self) -> &'static str {
        match self {
            DataCenter::Us => "",
            DataCenter::Uk => "-uk",
            DataCenter::De => "-de",
            DataCenter::Au => "-au",
            DataCenter::Ca => "-ca",
            DataCenter::Sg => "-sg",
        }
    }
}

impl fmt::Display for DataCenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataCenter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "us" => DataCenter::Us,
            "uk" => DataCenter::Uk,
            "de" => DataCenter::De,
            "au" => DataCenter::Au,
            "ca" => DataCenter::Ca,
            "sg" => DataCenter::Sg,
            other => return Err(format!("`{other}` is not one of us, uk, de, au, ca, sg")),
        })
    }
}

/// Which of a data centre's two hosts a URL is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// `api*`: token endpoints and the REST API.
    Api,
    /// `app*`: browser-facing OAuth pages.
    App,
}

/// A tenant's two Cronofy base URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    api: Url,
    app: Url,
}

impl Endpoints {
    /// The data centre's hosts, each replaced by its override when one is given.
    pub fn new(data_center: DataCenter, api_override: Option<Url>, app_override: Option<Url>) -> Endpoints {
        let host = |kind: &str| -> Url {
            let text = format!("https://{kind}{}.cronofy.com/", data_center.host_suffix());
            // Both halves are constants, so this always parses.
            Url::parse(&text).unwrap_or_else(|_| unreachable!("constant Cronofy host {text}"))
        };
        Endpoints {
            api: api_override.unwrap_or_else(|| host("api")),
            app: app_override.unwrap_or_else(|| host("app")),
        }
    }

    /// The API path of `segments` alone (`/v1/calendars/cal%2F1/events`), as
    /// Cronofy's batch entries name their targets.
    pub fn api_path(segments: &[&str]) -> String {
        let mut url = Url::parse("https://api.cronofy.com/").unwrap_or_else(|_| unreachable!("constant URL"));
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url.path().to_owned()
    }

    /// Builds `{base}/{segments…}`: each segment is percent-encoded, so ids
    /// from callers can never change the path's shape.
    pub fn url(&self, host: Host, segments: &[&str]) -> Url {
        let mut url = match host {
            Host::Api => self.api.clone(),
            Host::App => self.app.clone(),
        };
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn us_uses_bare_hosts_and_others_a_suffix() {
        let us = Endpoints::new(DataCenter::Us, None, None);
        assert_eq!(
            us.url(Host::Api, &["oauth", "token"]).as_str(),
            "https://api.cronofy.com/oauth/token"
        );
        assert_eq!(
            us.url(Host::App, &["oauth", "authorize"]).as_str(),
            "https://app.cronofy.com/oauth/authorize"
        );
        for (dc, api) in [
            (DataCenter::Uk, "https://api-uk.cronofy.com/v1/calendars"),
            (DataCenter::De, "https://api-de.cronofy.com/v1/calendars"),
            (DataCenter::Au, "https://api-au.cronofy.com/v1/calendars"),
            (DataCenter::Ca, "https://api-ca.cronofy.com/v1/calendars"),
            (DataCenter::Sg, "https://api-sg.cronofy.com/v1/calendars"),
        ] {
            assert_eq!(
                Endpoints::new(dc, None, None)
                    .url(Host::Api, &["v1", "calendars"])
                    .as_str(),
                api
            );
        }
    }

    #[test]
    fn overrides_keep_their_path_prefix() {
        let api = Url::parse("http://127.0.0.1:9000/cronofy/").ok();
        let endpoints = Endpoints::new(DataCenter::Uk, api, None);
        assert_eq!(
            endpoints.url(Host::Api, &["v1", "calendars"]).as_str(),
            "http://127.0.0.1:9000/cronofy/v1/calendars"
        );
        assert_eq!(endpoints.url(Host::App, &[]).as_str(), "https://app-uk.cronofy.com/");
    }

    #[test]
    fn segments_are_encoded() {
        let endpoints = Endpoints::new(DataCenter::Us, None, None);
        let url = endpoints.url(Host::Api, &["v1", "calendars", "cal/../x?y#z", "events"]);
        assert_eq!(
            url.as_str(),
            "https://api.cronofy.com/v1/calendars/cal%2F..%2Fx%3Fy%23z/events"
        );
    }

    #[test]
    fn parses_every_data_center_id() {
        for id in ["us", "uk", "de", "au", "ca", "sg"] {
            assert_eq!(id.parse::<DataCenter>().map(DataCenter::as_str), Ok(id));
        }
        assert!("eu".parse::<DataCenter>().is_err());
    }
}
