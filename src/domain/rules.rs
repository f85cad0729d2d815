//! Parsing rules for the text callers send. Each returns the parsed value or a
//! description of what is wrong; callers attach the field path.

use time::{Date, macros::format_description};
use url::Url;

type Rule<T> = Result<T, String>;

/// A required identifier: 1..=max characters, no control characters, not
/// blank, and not `.` or `..` (in a URL path they would change the path).
pub fn identifier(value: &str, max: usize) -> Rule<String> {
    if value.trim().is_empty() {
        return Err("is required".into());
    }
    if matches!(value, "." | "..") {
        return Err("must not be . or ..".into());
    }
    // Identifiers reach log lines: not even the newlines free text may hold.
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    bounded_text(value, max)
}

/// Optional free text: at most `max` characters, no control characters but newlines and tabs.
pub fn bounded_text(value: &str, max: usize) -> Rule<String> {
    if value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("must not contain control characters".into());
    }
    Ok(value.to_owned())
}

/// An IANA time zone name such as `Europe/London` or `Etc/GMT+5`.
pub fn tzid(value: &str) -> Rule<String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && !value.starts_with('/')
        && !value.ends_with('/')
        && !value.contains("..")
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err("must be an IANA time zone name such as Europe/London".into())
    }
}

/// A calendar date `YYYY-MM-DD`.
pub fn date(value: &str) -> Rule<Date> {
    Date::parse(value, format_description!("[year]-[month]-[day]"))
        .map_err(|_| "must be a date in the form YYYY-MM-DD".to_owned())
}

/// An absolute http(s) URL of at most 2048 characters.
pub fn http_url(value: &str) -> Rule<String> {
    if value.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    match Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(value.to_owned()),
        _ => Err("must be an absolute http or https URL".into()),
    }
}

/// A plausible email address: one `@`, non-empty parts, no spaces, at most 254 characters.
pub fn email(value: &str) -> Rule<String> {
    let plausible = value.len() <= 254
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(value.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !domain.starts_with('.') && !domain.ends_with('.'));
    if plausible {
        Ok(value.to_owned())
    } else {
        Err("must be an email address".into())
    }
}

/// A decimal coordinate within ±`limit`, kept as text as Cronofy's SDKs send it.
pub fn coordinate(value: &str, limit: f64) -> Rule<String> {
    match value.trim().parse::<f64>() {
        Ok(number) if number.is_finite() && number.abs() <= limit => Ok(value.trim().to_owned()),
        _ => Err(format!("must be a decimal number between -{limit} and {limit}")),
    }
}

/// A colour `#rrggbb`.
pub fn color(value: &str) -> Rule<String> {
    let ok = value.len() == 7 && value.starts_with('#') && value[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(value.to_owned())
    } else {
        Err("must be a colour in the form #rrggbb".into())
    }
}

/// A locale such as `en` or `en-GB`.
pub fn locale(value: &str) -> Rule<String> {
    let parts: Vec<&str> = value.split(['-', '_']).collect();
    let ok = match parts.as_slice() {
        [lang] => lang.len() == 2 && lang.bytes().all(|b| b.is_ascii_alphabetic()),
        [lang, region] => {
            lang.len() == 2
                && lang.bytes().all(|b| b.is_ascii_alphabetic())
                && region.len() == 2
                && region.bytes().all(|b| b.is_ascii_alphabetic())
        }
        _ => false,
    };
    if ok {
        Ok(value.to_owned())
    } else {
        Err("must be a locale such as en or en-GB".into())
    }
}

/// A language for an event's content: the 2-letter code Cronofy takes, such as
/// `en` (cronofy-php `src/Cronofy.php`, upsert docblock).
pub fn language(value: &str) -> Rule<String> {
    if value.len() == 2 && value.bytes().all(|b| b.is_ascii_lowercase()) {
        Ok(value.to_owned())
    } else {
        Err("must be a 2-letter language code such as en".into())
    }
}

/// A lower-case token such as a provider name or interaction type: `[a-z0-9_]{1,64}`.
pub fn token(value: &str) -> Rule<String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(value.to_owned())
    } else {
        Err("must be 1-64 characters of a-z, 0-9 and _".into())
    }
}

/// An OAuth scope: 1-128 visible ASCII characters, no spaces.
pub fn scope(value: &str) -> Rule<String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if ok {
        Ok(value.to_owned())
    } else {
        Err("must be a scope name without spaces".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_required_bounded_and_printable() {
        assert!(identifier("evt-1", 256).is_ok());
        assert_eq!(identifier("", 256), Err("is required".into()));
        assert_eq!(identifier("   ", 256), Err("is required".into()));
        assert!(identifier(&"x".repeat(257), 256).is_err());
        assert!(
            identifier(&"é".repeat(256), 256).is_ok(),
            "limits count characters, not bytes"
        );
        assert!(identifier("a\u{0}b", 256).is_err());
        assert!(identifier("a\nb", 256).is_err(), "no newline in an identifier");
        for path_changer in [".", ".."] {
            assert!(identifier(path_changer, 256).is_err(), "{path_changer}");
        }
        assert!(identifier("...", 256).is_ok() && identifier("a.b", 256).is_ok());
    }

    #[test]
    fn time_zones() {
        for ok in ["Europe/London", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "UTC"] {
            assert!(tzid(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Europe/",
            "/London",
            "../etc/passwd",
            "Europe London",
            &"A".repeat(65),
        ] {
            assert!(tzid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert!(date("2026-03-01").is_ok());
        assert!(date("2026-02-30").is_err());
        assert!(date("2026-3-1").is_err());
        assert!(date("2026-03-01T00:00:00Z").is_err());
    }

    #[test]
    fn urls_emails_coordinates_colours_locales() {
        assert!(http_url("https://example.com/x?y=1").is_ok());
        assert!(http_url("javascript:alert(1)").is_err());
        assert!(http_url("/relative").is_err());
        assert!(email("ada@example.com").is_ok());
        for bad in ["ada", "@example.com", "ada@", "a b@example.com", "a@b@c", "ada@.com"] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert_eq!(coordinate(" 51.5072 ", 90.0), Ok("51.5072".into()));
        assert!(coordinate("91", 90.0).is_err());
        assert!(coordinate("NaN", 90.0).is_err());
        assert!(coordinate("-180", 180.0).is_ok());
        assert!(color("#c6040f").is_ok());
        assert!(color("red").is_err());
        assert!(locale("en").is_ok() && locale("en-GB").is_ok());
        assert!(locale("english").is_err());
    }

    #[test]
    fn scopes_and_tokens() {
        assert!(scope("free_busy_write").is_ok());
        assert!(scope("service_account/accounts/manage").is_ok());
        assert!(scope("read write").is_err());
        assert!(scope("").is_err());
        assert!(token("google").is_ok());
        assert!(token("Google").is_err());
    }
}
