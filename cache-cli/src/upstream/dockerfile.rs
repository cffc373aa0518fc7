//! The images a Dockerfile builds on: every `FROM` and `COPY --from=` that
//! names an image rather than an earlier stage, with the global `ARG`s
//! (their defaults overridden by the build arguments) and the automatic
//! platform arguments substituted the way BuildKit does.
//!
//! Only what decides the upstream images is read (`ARG` before the first
//! `FROM`, `FROM`, `COPY`/`ADD --from=`); every other instruction is skipped
//! whatever its syntax, heredoc bodies included, so a Dockerfile using a
//! newer frontend feature never makes the key fail. (The `dockerfile-parser`
//! crate was considered: it rejects heredocs and substitutes only `ARG`
//! defaults, not build arguments.)

use std::collections::BTreeMap;

use crate::image::oci::Platform;

/// An image the Dockerfile starts a stage from or copies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    /// The reference, variables substituted.
    pub reference: String,
    /// The platform it is pulled for: `--platform=` when given, else the
    /// target platform.
    pub platform: Platform,
    /// Whether `--platform=` chose another platform than the target's.
    pub explicit_platform: bool,
    /// 1-based line of the instruction.
    pub line: usize,
}

/// Why the Dockerfile's images cannot be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DockerfileError {
    /// 1-based line of the instruction.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One instruction: its first line number, keyword (upper case) and the
/// rest of the logical line.
pub(crate) struct Instruction {
    /// 1-based line where it starts.
    pub(crate) line: usize,
    /// The keyword, upper case.
    pub(crate) keyword: String,
    /// The rest of the logical line, trimmed.
    pub(crate) rest: String,
}

/// Joins continuation lines, drops comments and blank lines, and skips
/// heredoc bodies.
pub(crate) fn instructions(text: &str) -> Vec<Instruction> {
    let mut escape = '\\';
    let mut lines = text.lines().enumerate().peekable();
    // Parser directives: `# escape=`` ` before anything else.
    while let Some((_, line)) = lines.peek() {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        match directive.trim().split_once('=') {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("escape") => {
                if value.trim() == "`" {
                    escape = '`';
                }
                lines.next();
            }
            Some((name, _)) if name.trim().eq_ignore_ascii_case("syntax") => {
                lines.next();
            }
            _ => break,
        }
    }
    let mut out = Vec::new();
    while let Some((index, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut logical = String::new();
        let mut current = line.trim_end().to_owned();
        loop {
            match current.strip_suffix(escape) {
                Some(head) => {
                    logical.push_str(head);
                    // The next non-comment, non-blank line continues it.
                    let mut next = None;
                    for (_, line) in lines.by_ref() {
                        let trimmed = line.trim();
                        if trimmed.is_empty() || trimmed.starts_with('#') {
                            continue;
                        }
                        next = Some(line.trim_end().to_owned());
                        break;
                    }
                    match next {
                        Some(line) => current = line,
                        None => break,
                    }
                }
                None => {
                    logical.push_str(&current);
                    break;
                }
            }
        }
        let logical = logical.trim();
        let (keyword, rest) = logical
            .split_once(char::is_whitespace)
            .unwrap_or((logical, ""));
        let keyword = keyword.to_ascii_uppercase();
        for terminator in heredoc_terminators(&keyword, rest) {
            for (_, body) in lines.by_ref() {
                if body.trim_start_matches('\t') == terminator || body == terminator {
                    break;
                }
            }
        }
        out.push(Instruction {
            line: index + 1,
            keyword,
            rest: rest.trim().to_owned(),
        });
    }
    out
}

/// The heredoc terminators (`<<EOF`, `<<-EOF`, `<<"EOF"`) of a `RUN`,
/// `COPY` or `ADD`, in order.
fn heredoc_terminators(keyword: &str, rest: &str) -> Vec<String> {
    if !matches!(keyword, "RUN" | "COPY" | "ADD") {
        return Vec::new();
    }
    let mut terminators = Vec::new();
    let mut remaining = rest;
    while let Some(at) = remaining.find("<<") {
        let after = &remaining[at + 2..];
        let after = after.strip_prefix('-').unwrap_or(after);
        let word: String = after
            .trim_start_matches(['"', '\''])
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !word.is_empty() {
            terminators.push(word);
        }
        remaining = after;
    }
    terminators
}

/// Substitutes `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME-word}`,
/// `${NAME:+word}` and `${NAME+word}`; `\$` is a literal `$`. An unset
/// variable is empty, as in BuildKit.
fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'$') => {
                out.push('$');
                chars.next();
            }
            '$' if chars.peek() == Some(&'{') => {
                chars.next();
                let mut inner = String::new();
                let mut depth = 1;
                for c in chars.by_ref() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    inner.push(c);
                }
                let name_end = inner
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(inner.len());
                let (name, modifier) = inner.split_at(name_end);
                let value = vars.get(name);
                let set_nonempty = value.is_some_and(|v| !v.is_empty());
                let expanded = if let Some(word) = modifier.strip_prefix(":-") {
                    if set_nonempty {
                        value.cloned().unwrap_or_default()
                    } else {
                        substitute(word, vars)
                    }
                } else if let Some(word) = modifier.strip_prefix(":+") {
                    if set_nonempty {
                        substitute(word, vars)
                    } else {
                        String::new()
                    }
                } else if let Some(word) = modifier.strip_prefix('-') {
                    match value {
                        Some(value) => value.clone(),
                        None => substitute(word, vars),
                    }
                } else if let Some(word) = modifier.strip_prefix('+') {
                    if value.is_some() {
                        substitute(word, vars)
                    } else {
                        String::new()
                    }
                } else {
                    value.cloned().unwrap_or_default()
                };
                out.push_str(&expanded);
            }
            '$' if chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_') =>
            {
                let mut name = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
            }
            c => out.push(c),
        }
    }
    out
}

/// BuildKit's automatic platform arguments.
fn platform_args(prefix: &str, platform: &Platform, vars: &mut BTreeMap<String, String>) {
    vars.insert(format!("{prefix}PLATFORM"), platform.to_string());
    vars.insert(format!("{prefix}OS"), platform.os.clone());
    vars.insert(format!("{prefix}ARCH"), platform.architecture.clone());
    vars.insert(
        format!("{prefix}VARIANT"),
        platform.variant.clone().unwrap_or_default(),
    );
}

/// Splits `NAME=value` / `NAME` words of an `ARG` or `ENV` (values may be
/// quoted).
pub(crate) fn arg_words(rest: &str) -> Vec<(String, Option<String>)> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    for c in rest.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            (_, c) => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (word, None),
        })
        .collect()
}

/// The build-context paths the Dockerfile's `COPY` and `ADD` instructions
/// read (those without `--from`; URLs and heredocs are not paths), in order
/// and without duplicates, as written (variables are not substituted).
/// `cachectl init` makes them the base's manifests: what the base copies in
/// is what decides it.
pub fn context_sources(text: &str) -> Vec<String> {
    let mut sources: Vec<String> = Vec::new();
    for instruction in instructions(text) {
        if !matches!(instruction.keyword.as_str(), "COPY" | "ADD") {
            continue;
        }
        let rest = instruction.rest.trim();
        let mut words: Vec<String> = Vec::new();
        let mut options_done = false;
        for word in rest.split_whitespace() {
            if !options_done && word.starts_with("--") {
                if word.starts_with("--from=") {
                    words.clear();
                    break;
                }
                continue;
            }
            options_done = true;
            words.push(word.to_owned());
        }
        if let Some(json) = words
            .first()
            .filter(|w| w.starts_with('['))
            .map(|_| words.join(" "))
        {
            words = serde_json::from_str::<Vec<String>>(&json).unwrap_or_default();
        }
        // The last word is the destination.
        words.pop();
        for word in words {
            if word.starts_with("<<") || word.contains("://") || word.starts_with("git@") {
                continue;
            }
            let path = word.trim_start_matches("./").to_owned();
            if !path.is_empty() && !sources.contains(&path) {
                sources.push(path);
            }
        }
    }
    sources
}

/// The images `text` builds on, in order of appearance, without duplicates.
/// `args` are the build arguments; `target` the platform built for.
pub fn images(
    text: &str,
    args: &BTreeMap<String, String>,
    target: &Platform,
) -> Result<Vec<ImageUse>, DockerfileError> {
    let mut vars = BTreeMap::new();
    platform_args("TARGET", target, &mut vars);
    platform_args("BUILD", &Platform::host(), &mut vars);
    let mut stages: Vec<String> = Vec::new();
    let mut seen_from = false;
    let mut uses: Vec<ImageUse> = Vec::new();
    let mut push = |image: ImageUse| {
        if !uses
            .iter()
            .any(|u| u.reference == image.reference && u.platform == image.platform)
        {
            uses.push(image);
        }
    };
    for instruction in instructions(text) {
        let line = instruction.line;
        match instruction.keyword.as_str() {
            "ARG" if !seen_from => {
                for (name, default) in arg_words(&instruction.rest) {
                    let value = args
                        .get(&name)
                        .cloned()
                        .or_else(|| default.map(|d| substitute(&d, &vars)));
                    match value {
                        Some(value) => vars.insert(name, value),
                        None => vars.remove(&name),
                    };
                }
            }
            "FROM" => {
                seen_from = true;
                let mut platform = None;
                let mut words = Vec::new();
                for word in instruction.rest.split_whitespace() {
                    match word.strip_prefix("--platform=") {
                        Some(value) => platform = Some(substitute(value, &vars)),
                        None if word.starts_with("--") => {}
                        None => words.push(word),
                    }
                }
                let image = words
                    .first()
                    .map(|word| substitute(word, &vars))
                    .unwrap_or_default();
                if image.is_empty() {
                    return Err(DockerfileError {
                        line,
                        message: format!(
                            "`FROM {}` names no image (is a build argument unset?)",
                            instruction.rest
                        ),
                    });
                }
                let is_stage = stages.iter().any(|s| s.eq_ignore_ascii_case(&image));
                if let [_, as_word, alias, ..] = words.as_slice()
                    && as_word.eq_ignore_ascii_case("as")
                {
                    stages.push((*alias).to_owned());
                } else {
                    stages.push(String::new());
                }
                if is_stage || image.eq_ignore_ascii_case("scratch") {
                    continue;
                }
                let (platform, explicit_platform) = match platform {
                    Some(text) => {
                        let parsed = Platform::parse(&text).map_err(|message| DockerfileError {
                            line,
                            message: format!("--platform: {message}"),
                        })?;
                        let explicit = parsed != *target;
                        (parsed, explicit)
                    }
                    None => (target.clone(), false),
                };
                push(ImageUse {
                    reference: image,
                    platform,
                    explicit_platform,
                    line,
                });
            }
            "COPY" | "ADD" => {
                let from = instruction
                    .rest
                    .split_whitespace()
                    .take_while(|word| word.starts_with("--"))
                    .find_map(|word| word.strip_prefix("--from="))
                    .map(|value| substitute(value, &vars));
                let Some(from) = from else { continue };
                let is_stage = from.parse::<usize>().is_ok()
                    || stages.iter().any(|s| s.eq_ignore_ascii_case(&from));
                if !is_stage && !from.is_empty() {
                    push(ImageUse {
                        reference: from,
                        platform: target.clone(),
                        explicit_platform: false,
                        line,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(uses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str, args: &[(&str, &str)]) -> Vec<String> {
        let args = args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let target = Platform::parse("linux/amd64").unwrap();
        images(text, &args, &target)
            .unwrap()
            .into_iter()
            .map(|u| {
                if u.explicit_platform {
                    format!("{} [{}]", u.reference, u.platform)
                } else {
                    u.reference
                }
            })
            .collect()
    }

    #[test]
    fn multi_stage_files_name_their_images_not_their_stages() {
        let text = "\
# syntax=docker/dockerfile:1
ARG PY=3.11
ARG REGISTRY=registry.example.com
FROM ${REGISTRY}/python:${PY}-slim AS build
RUN pip wheel -r requirements.txt
from build as test
FROM --platform=$BUILDPLATFORM golang:1.22 AS tools
FROM scratch
COPY --from=build /wheels /wheels
COPY --from=0 /x /x
COPY --from=nginx:1.25 /etc/nginx /etc/nginx
FROM registry.example.com/python:${PY}-slim
";
        assert_eq!(
            refs(text, &[]),
            [
                "registry.example.com/python:3.11-slim",
                "golang:1.22",
                "nginx:1.25"
            ]
        );
        // A build argument overrides the ARG default.
        assert_eq!(
            refs(text, &[("PY", "3.12"), ("REGISTRY", "r.io")])[0],
            "r.io/python:3.12-slim"
        );
    }

    #[test]
    fn another_platform_is_named_and_the_target_platform_is_not() {
        let text =
            "FROM --platform=linux/arm64 alpine:3.20\nFROM --platform=$TARGETPLATFORM busybox\n";
        assert_eq!(refs(text, &[]), ["alpine:3.20 [linux/arm64]", "busybox"]);
    }

    #[test]
    fn continuations_comments_heredocs_and_escape_directives() {
        let text = "\
FROM \\
  # a comment inside the continuation
  debian:bookworm-slim
RUN <<EOF
FROM not-an-image
EOF
RUN <<-'SCRIPT' cat > /x
\tFROM neither
\tSCRIPT
COPY <<A <<B /dest/
FROM nope-a
A
FROM nope-b
B
";
        assert_eq!(refs(text, &[]), ["debian:bookworm-slim"]);
        let backtick = "# escape=`\nFROM `\n  alpine:3.20\n";
        assert_eq!(refs(backtick, &[]), ["alpine:3.20"]);
    }

    #[test]
    fn substitution_forms_follow_buildkit() {
        let vars = BTreeMap::from([
            ("SET".to_owned(), "x".to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ]);
        assert_eq!(substitute("${SET:-d}${UNSET:-d}${EMPTY:-d}", &vars), "xdd");
        assert_eq!(substitute("${EMPTY-d}${UNSET-d}", &vars), "d");
        assert_eq!(substitute("${SET:+a}${EMPTY:+b}${EMPTY+c}", &vars), "ac");
        assert_eq!(substitute("$SET/\\$SET/$UNSET.", &vars), "x/$SET/.");
    }

    #[test]
    fn an_image_left_empty_by_an_unset_argument_is_an_error_naming_its_line() {
        let target = Platform::parse("linux/amd64").unwrap();
        let error = images("ARG BASE\n\nFROM ${BASE}\n", &BTreeMap::new(), &target).unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.message.contains("names no image"), "{error}");
        let ok = images(
            "ARG BASE\nFROM ${BASE}\n",
            &BTreeMap::from([("BASE".to_owned(), "alpine".to_owned())]),
            &target,
        )
        .unwrap();
        assert_eq!(ok[0].reference, "alpine");
    }
    #[test]
    fn context_sources_are_the_copied_paths_of_the_build_context() {
        let text = "FROM golang:1.23 AS build\nWORKDIR /src\nCOPY go.mod go.sum ./\n\
                    COPY --chown=1000:1000 ./vendor/ vendor/\nCOPY [\"a b.txt\", \"/x/\"]\n\
                    ADD https://example.com/x.tgz /x\nCOPY --from=build /out /out\n\
                    COPY <<EOF /etc/x\nbody\nEOF\nCOPY go.sum /again\n";
        assert_eq!(
            context_sources(text),
            ["go.mod", "go.sum", "vendor/", "a b.txt"]
        );
    }
}
