//! What kind of bearer credential a secret is. Both sides ask: the server
//! verifies an ID token against its issuers instead of looking it up, and
//! cachectl lets the server's rules choose the namespace of a job that
//! presents one.

/// Whether `secret` has the shape of a JWT (three dot-separated parts of
/// which the first is a JSON object in base64url: a CI job's OIDC ID
/// token), rather than one of the server's `cct_` tokens.
pub fn is_id_token(secret: &str) -> bool {
    secret.starts_with("eyJ") && secret.bytes().filter(|&b| b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_tokens_are_told_from_server_tokens() {
        assert!(is_id_token("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!is_id_token("cct_0123456789abcdef"));
        assert!(!is_id_token("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0"));
        assert!(!is_id_token(""));
    }
}
