//! [`Invalid`]: a value someone wrote (a flag, a setting, a rule, a
//! descriptor field) that cannot be used, and why. A leaf: the parsers of
//! such values return it, and the binary that called them decides what it
//! means (a usage error, a refused configuration, a 400).

/// A value that cannot be used; the message says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    /// `message` as an [`Invalid`].
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<&str> for Invalid {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<Invalid> for String {
    fn from(invalid: Invalid) -> Self {
        invalid.0
    }
}
