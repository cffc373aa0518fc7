//! `.dockerignore` and `exclude` patterns with Docker's semantics: patterns
//! are relative to the context root (a leading `/` is dropped), `*` and `?`
//! do not cross `/`, `**` matches any number of folders, a pattern that
//! matches a folder excludes everything below it, `!` re-includes, and the
//! last matching pattern wins.

use std::path::Path;

use glob::{MatchOptions, Pattern};

use crate::invalid::Invalid;

const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// A compiled list of exclusion patterns.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    rules: Vec<(Pattern, bool)>,
}

impl Excludes {
    /// Compiles `patterns` (lines of a `.dockerignore`, or `exclude` entries).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, Invalid> {
        let mut rules = Vec::new();
        for line in patterns {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = pattern.trim_start_matches('/').trim_end_matches('/');
            let cleaned = cleaned.strip_prefix("./").unwrap_or(cleaned);
            if cleaned.is_empty() {
                continue;
            }
            let compiled =
                Pattern::new(cleaned).map_err(|e| format!("exclude pattern {line:?}: {e}"))?;
            rules.push((compiled, negated));
        }
        Ok(Self { rules })
    }

    /// The patterns of `context/.dockerignore` (if any) followed by `extra`.
    pub fn for_context(context: &Path, extra: &[String]) -> Result<Self, Invalid> {
        let ignore_file = context.join(".dockerignore");
        let text = match std::fs::read_to_string(&ignore_file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                return Err(Invalid(format!(
                    "cannot read {}: {error}",
                    ignore_file.display()
                )));
            }
        };
        Self::new(text.lines().chain(extra.iter().map(String::as_str)))
    }

    /// Whether the context-relative path (with `/` separators) is excluded.
    pub fn excluded(&self, relative: &str) -> bool {
        let mut excluded = false;
        for (pattern, negated) in &self.rules {
            let matches = relative
                .match_indices('/')
                .map(|(at, _)| &relative[..at])
                .chain(std::iter::once(relative))
                .any(|candidate| pattern.matches_with(candidate, OPTIONS));
            if matches {
                excluded = !negated;
            }
        }
        excluded
    }

    /// Whether a negation could re-include something below an excluded folder.
    pub fn has_negations(&self) -> bool {
        self.rules.iter().any(|(_, negated)| *negated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_dockerignore_semantics() {
        let excludes = Excludes::new([
            "# comment",
            ".git",
            "/target",
            "**/*.pyc",
            "docs/*.md",
            "!docs/README.md",
            "node_modules/",
        ])
        .unwrap();
        for path in [
            ".git",
            ".git/config",
            "target/debug/x",
            "a/b/c.pyc",
            "x.pyc",
            "docs/guide.md",
            "node_modules/left-pad/index.js",
        ] {
            assert!(excludes.excluded(path), "{path}");
        }
        for path in [
            "src/main.py",
            "docs/README.md",
            "docs/sub/deep.md",
            "sub/target/x",
            "gitx",
        ] {
            assert!(!excludes.excluded(path), "{path}");
        }
        assert!(excludes.has_negations());
    }
}
