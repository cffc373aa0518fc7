//! pip requirement files and the files they include (`-r`, `-c`,
//! `--requirement`, `--constraint`), which decide the install as much as
//! the file named on the command line.

use std::path::Path;

/// `file` (relative to `root`) and every file it includes, transitively,
/// in the order met, relative to `root` with `/` separators. Includes are
/// relative to the including file's folder, as pip reads them; one that
/// does not exist or leaves `root` is skipped (pip would fail on it, and
/// `cachectl hash` then names it).
pub fn requirement_files(root: &Path, file: &str) -> Vec<String> {
    let mut files = vec![normalise(file)];
    let mut next = 0;
    while next < files.len() {
        let current = files[next].clone();
        next += 1;
        let Ok(text) = std::fs::read_to_string(root.join(&current)) else {
            continue;
        };
        let folder = Path::new(&current)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for included in includes(&text) {
            let joined = normalise(&folder.join(&included).to_string_lossy());
            if joined.starts_with("../") || Path::new(&joined).is_absolute() {
                continue;
            }
            if root.join(&joined).is_file() && !files.contains(&joined) {
                files.push(joined);
            }
        }
    }
    files
}

/// The files a requirements text includes, as written.
fn includes(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.split(" #").next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        let target = match first {
            "-r" | "-c" | "--requirement" | "--constraint" => words.next().map(str::to_owned),
            _ => ["-r", "-c", "--requirement=", "--constraint="]
                .iter()
                .find_map(|flag| first.strip_prefix(flag))
                .filter(|rest| !rest.is_empty())
                .map(str::to_owned),
        };
        if let Some(target) = target {
            found.push(target);
        }
    }
    found
}

/// `a/./b/../c` as `a/c`, with `/` separators.
fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_are_followed_relative_to_the_including_file() {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "requirements.txt",
            "-r requirements/base.txt\n--constraint=constraints.txt\nflask==3.0\n",
        );
        write(
            "requirements/base.txt",
            "# shared\n-r ./common.txt  # comment\nrequests==2.32\n-r ../requirements.txt\n",
        );
        write("requirements/common.txt", "six==1.16\n-r missing.txt\n");
        write("constraints.txt", "idna<4\n");
        write("requirements/dev.txt", "-r base.txt\npytest\n");
        assert_eq!(
            requirement_files(root.path(), "requirements.txt"),
            [
                "requirements.txt",
                "requirements/base.txt",
                "constraints.txt",
                "requirements/common.txt"
            ]
        );
    }
}
