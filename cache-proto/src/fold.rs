//! Names into namespaces, one to one: a branch name (`feature/login`), a
//! claim value or a project path becomes a part of a namespace that no
//! other name becomes.
//!
//! A name that is already a plain part (`[A-Za-z0-9._-]`, starting with a
//! letter or digit, short enough) stays as it is. Any other is folded into
//! the alphabet (every other character becomes `-`, runs collapse), cut to
//! fit, and marked with `-` and 16 hex digits of the BLAKE3 hash of the
//! original: `feature/login` → `feature-login-3f1c…`. A name kept as it is
//! never ends in such a mark (one that does is folded as well), so
//! `feature/login` and `feature-login` never share a namespace, and two
//! folded names share one only if their hashes' first 64 bits agree.
//!
//! cachectl folds the branch of a CI job this way (`branch-{name}`), and
//! the server's `{claim|slug}` placeholders fill with the same function, so
//! both sides name a branch alike.

/// Hex digits of the hash that marks a folded name.
pub const HASH_HEX: usize = 16;

/// The least room a folded part needs: one character, `-` and the hash.
pub const MIN_ROOM: usize = HASH_HEX + 2;

/// `name` as a namespace part of at most `room` characters (at least
/// [`MIN_ROOM`]; less is treated as [`MIN_ROOM`]), distinct for distinct
/// names.
pub fn fold(name: &str, room: usize) -> String {
    let room = room.max(MIN_ROOM);
    if is_kept(name, room) {
        return name.to_owned();
    }
    let mut part = String::with_capacity(room);
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_') {
            c
        } else {
            '-'
        };
        // A part starts with a letter or digit, and runs of `-` collapse.
        let skip = if part.is_empty() {
            !c.is_ascii_alphanumeric()
        } else {
            c == '-' && part.ends_with('-')
        };
        if !skip {
            part.push(c);
        }
        if part.len() >= room - HASH_HEX - 1 {
            break;
        }
    }
    let mut part = part.trim_end_matches(['-', '.']).to_owned();
    if part.is_empty() {
        part.push('x');
    }
    let hash = blake3::hash(name.as_bytes()).to_hex();
    part.push('-');
    part.push_str(&hash[..HASH_HEX]);
    part
}

/// Whether `name` stands for itself: plain, fits, and not marked.
fn is_kept(name: &str, room: usize) -> bool {
    !name.is_empty()
        && name.len() <= room
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !is_marked(name)
}

/// Whether `part` ends the way a folded name does: `-` and [`HASH_HEX`]
/// lowercase hex digits.
fn is_marked(part: &str) -> bool {
    let bytes = part.as_bytes();
    bytes.len() > HASH_HEX
        && bytes[bytes.len() - HASH_HEX - 1] == b'-'
        && bytes[bytes.len() - HASH_HEX..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Namespace;

    const ROOM: usize = 57;

    #[test]
    fn plain_names_stay_as_they_are() {
        for name in ["main", "feature-login", "Feature_Login.2", "v1.2.3", "7"] {
            assert_eq!(fold(name, ROOM), name);
        }
        let longest = "a".repeat(ROOM);
        assert_eq!(fold(&longest, ROOM), longest);
    }

    #[test]
    fn other_names_fold_with_their_hash() {
        let folded = fold("feature/login", ROOM);
        assert!(folded.starts_with("feature-login-"), "{folded}");
        assert_eq!(folded.len(), "feature-login-".len() + HASH_HEX);
        assert_eq!(fold("feature/login", ROOM), folded, "the same every time");
        for name in [
            "feature/login",
            "Feature/Login",
            "-x",
            ".hidden",
            "a//b",
            "release/2.0/",
            "ünïcode/ßranch",
            "///",
            &"long/".repeat(20),
        ] {
            let folded = fold(name, ROOM);
            assert!(folded.len() <= ROOM, "{name:?} → {folded:?}");
            assert!(Namespace::parse(&folded).is_ok(), "{name:?} → {folded:?}");
            assert!(is_marked(&folded), "{name:?} → {folded:?}");
        }
        assert_eq!(fold("a".repeat(ROOM + 1).as_str(), ROOM).len(), ROOM);
    }

    #[test]
    fn names_that_fold_alike_never_share_a_part() {
        let hashed = fold("feature/login", ROOM);
        let names = [
            "feature/login".to_owned(),
            "feature-login".to_owned(),
            "feature_login".to_owned(),
            "feature//login".to_owned(),
            "feature/login/".to_owned(),
            "FEATURE/LOGIN".to_owned(),
            // A plain name that looks folded is folded again.
            hashed.clone(),
            format!("{}x", "a".repeat(ROOM)),
            format!("{}y", "a".repeat(ROOM)),
        ];
        let folded: std::collections::BTreeSet<String> =
            names.iter().map(|name| fold(name, ROOM)).collect();
        assert_eq!(folded.len(), names.len(), "{folded:#?}");
        assert_ne!(fold(&hashed, ROOM), hashed);
    }

    #[test]
    fn the_least_room_still_holds_a_character_and_the_hash() {
        let folded = fold("feature/login", 3);
        assert_eq!(folded.len(), MIN_ROOM);
        assert!(folded.starts_with("f-"), "{folded}");
    }
}
