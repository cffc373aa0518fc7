//! Digests, action-cache keys and compatibility-protocol keys: whatever the
//! bytes, parsing never panics, and what parses is exactly what the wire
//! contract allows and prints back unchanged.
#![no_main]

use cache_proto::{Digest, Key};
use cache_server::blob::name::{EntryKey, MAX_KEY_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lower_hex =
        |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match Digest::parse(text) {
        Ok(digest) => {
            assert!(lower_hex(text), "{text:?} parsed as a digest");
            assert_eq!(digest.to_string(), text);
        }
        Err(_) => assert!(!lower_hex(text), "{text:?} refused as a digest"),
    }
    match Key::parse(text) {
        Ok(key) => assert_eq!(key.to_string(), text),
        Err(_) => assert!(!lower_hex(text)),
    }
    if let Ok(key) = EntryKey::parse(text) {
        let s = key.as_str();
        assert!(!s.is_empty() && s.len() <= MAX_KEY_LEN, "{s:?}");
        assert!(!s.starts_with('.'), "{s:?}");
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')),
            "{s:?}"
        );
    }
});
