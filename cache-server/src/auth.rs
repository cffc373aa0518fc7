//! Who may do what: the auth mode and new token secrets. Which scope each
//! request needs is `http::endpoint`; the middleware that applies both is
//! `http::auth`.

use std::net::SocketAddr;

use base64::Engine as _;
use cache_proto::Invalid;

/// How requests are authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every request but health checks needs a token.
    Required,
    /// Reads need no token; writes and admin routes do.
    AnonymousRead,
    /// No checks at all (the default on a loopback address only).
    Off,
}

impl AuthMode {
    /// The mode when none is given: `off` on loopback, else `required`.
    pub fn default_for(address: &SocketAddr) -> Self {
        if address.ip().is_loopback() {
            Self::Off
        } else {
            Self::Required
        }
    }
}

/// A new token: its public id and its secret (shown once, never stored).
#[derive(Debug)]
pub struct NewToken {
    /// Public identifier, 12 hex.
    pub id: String,
    /// The secret: `cct_` and 43 base64url characters (256 random bits).
    pub secret: String,
}

/// `bytes` in lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` random bytes in lowercase hex, for identifiers that must not
/// collide (lease nonces, replica names); falls back to the clock and the
/// process id if the system has no randomness to give.
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    if getrandom::fill(&mut bytes).is_err() {
        let fallback = (crate::index::now_ms() as u64) ^ (u64::from(std::process::id()) << 40);
        for (byte, source) in bytes.iter_mut().zip(fallback.to_le_bytes().iter().cycle()) {
            *byte = *source;
        }
    }
    hex(&bytes)
}

/// Draws a new token from the operating system's random source.
pub fn new_token() -> Result<NewToken, getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let mut id = [0u8; 6];
    getrandom::fill(&mut id)?;
    Ok(NewToken {
        id: hex(&id),
        secret: format!(
            "cct_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        ),
    })
}

/// When a token that lives `lifetime` (`30d`, `12h`, ...) from now
/// expires, in Unix ms; `None` (never) without a lifetime.
pub fn expiry(lifetime: Option<&str>) -> Result<Option<i64>, Invalid> {
    lifetime
        .map(parse_duration_ms)
        .transpose()
        .map(|ms| ms.map(|ms| crate::index::now_ms() + ms))
}

/// Parses `30d`, `12h`, `90m`, `3600s` or plain seconds into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, Invalid> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: i64 = number.parse().map_err(|_| {
        Invalid(format!(
            "{text:?} is not a duration like 30d, 12h, 90m or 3600s"
        ))
    })?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(Invalid(format!(
                "{text:?}: the unit is one of s, m, h, d, w"
            )));
        }
    };
    value
        .checked_mul(seconds * 1000)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| Invalid(format!("{text:?} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_well_formed() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a.secret, b.secret);
        assert!(
            a.secret.starts_with("cct_") && a.secret.len() == 47,
            "{}",
            a.secret
        );
        assert_eq!(a.id.len(), 12);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_duration_ms("90"), Ok(90_000));
        assert!(parse_duration_ms("0d").is_err());
        assert!(parse_duration_ms("3y").is_err());
        assert!(parse_duration_ms("abc").is_err());
    }
}
