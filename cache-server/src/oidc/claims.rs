//! A verified ID token's claims, as the rules read them: strings as they
//! are, numbers and booleans written out, and `pr` derived from the ref.

use serde_json::{Map, Value};

/// A verified token's claims.
#[derive(Debug, Clone, Default)]
pub struct Claims(Map<String, Value>);

impl Claims {
    /// Wraps a verified payload.
    pub fn new(payload: Map<String, Value>) -> Self {
        Self(payload)
    }

    /// A claim as text: strings as they are, numbers and booleans written
    /// out (GitLab sends `"true"`, others `true`). `pr` is derived: the
    /// number in a `ref` of `refs/pull/N/...` (GitHub) or
    /// `refs/merge-requests/N/...` (GitLab).
    pub fn get(&self, name: &str) -> Option<String> {
        if name == "pr" {
            return self.get("ref").as_deref().and_then(pull_request_number);
        }
        match self.0.get(name)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
impl Claims {
    /// The claims of a JSON object, for tests.
    pub(crate) fn of(value: Value) -> Self {
        match value {
            Value::Object(map) => Self(map),
            other => panic!("claims are an object, not {other}"),
        }
    }
}

/// `42` for `refs/pull/42/merge` or `refs/merge-requests/42/head`.
fn pull_request_number(reference: &str) -> Option<String> {
    let rest = reference
        .strip_prefix("refs/pull/")
        .or_else(|| reference.strip_prefix("refs/merge-requests/"))?;
    let (number, _) = rest.split_once('/')?;
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then(|| number.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_request_numbers_come_from_the_ref() {
        assert_eq!(
            pull_request_number("refs/pull/42/merge").as_deref(),
            Some("42")
        );
        assert_eq!(
            pull_request_number("refs/merge-requests/7/head").as_deref(),
            Some("7")
        );
        assert_eq!(pull_request_number("refs/heads/main"), None);
        assert_eq!(pull_request_number("refs/pull/x/merge"), None);
        assert_eq!(pull_request_number("refs/pull//merge"), None);
    }
}
