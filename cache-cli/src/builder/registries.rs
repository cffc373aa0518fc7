//! What buildah and podman need to reach the registries cachectl reaches:
//! a `registries.conf` that marks the registries cachectl speaks plain
//! HTTP to as insecure, written on top of the user's own so that mirrors
//! and search registries stay as they are, and an auth file holding the
//! credentials given to cachectl. Both go to the builder through the
//! variables it reads (`CONTAINERS_REGISTRIES_CONF`, `REGISTRY_AUTH_FILE`),
//! never on its command line, which is echoed in logs.
//!
//! `--tls-verify=false` would do the first job too, but for every registry
//! of the build, including public ones.

use std::path::{Path, PathBuf};

use crate::invalid::Invalid;
use base64::Engine as _;
use toml::{Table, Value};

/// The user's registries.conf, where containers/image looks for it.
fn users_registries_conf() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let per_user = home.map(|home| home.join(".config/containers/registries.conf"));
    per_user
        .filter(|path| path.is_file())
        .or_else(|| Some(PathBuf::from("/etc/containers/registries.conf")))
        .filter(|path| path.is_file())
}

/// `text` (a registries.conf, possibly empty) with every host of
/// `insecure` declared insecure. `None` when the file is in the old v1
/// format, which cannot be extended with `[[registry]]` tables.
pub fn with_insecure(text: &str, insecure: &[String]) -> Result<Option<String>, Invalid> {
    let mut table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| Invalid(format!("registries.conf is not TOML: {e}")))?;
    if table.contains_key("registries") {
        return Ok(None);
    }
    let entries = table
        .entry("registry")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(entries) = entries else {
        return Err(Invalid::new(
            "registries.conf: `registry` is not an array of tables",
        ));
    };
    for host in insecure {
        let existing = entries.iter_mut().find(|entry| {
            entry.get("location").and_then(Value::as_str) == Some(host.as_str())
                || entry.get("prefix").and_then(Value::as_str) == Some(host.as_str())
        });
        match existing {
            Some(Value::Table(entry)) => {
                entry.insert("insecure".into(), Value::Boolean(true));
            }
            _ => {
                let mut entry = Table::new();
                entry.insert("location".into(), Value::String(host.clone()));
                entry.insert("insecure".into(), Value::Boolean(true));
                entries.push(Value::Table(entry));
            }
        }
    }
    toml::to_string(&table)
        .map(Some)
        .map_err(|e| Invalid(format!("writing registries.conf: {e}")))
}

/// An auth file (the `auth.json` / Docker config format) giving `user` and
/// `password` for every host of `hosts`.
pub fn auth_file(hosts: &[String], user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let auths: serde_json::Map<String, serde_json::Value> = hosts
        .iter()
        .map(|host| (host.clone(), serde_json::json!({ "auth": auth })))
        .collect();
    serde_json::json!({ "auths": auths }).to_string()
}

/// The variables a builder runs with, and what to warn about.
#[derive(Debug, Default)]
pub struct BuilderEnv {
    /// Name and value of each variable.
    pub vars: Vec<(String, String)>,
    /// What could not be arranged.
    pub warnings: Vec<String>,
}

/// The variables for the builder, and the files they name (kept in
/// `folder`, which must outlive the build).
pub fn builder_env(
    folder: &Path,
    insecure: &[String],
    credentials: Option<(&str, &str, &[String])>,
) -> Result<BuilderEnv, std::io::Error> {
    let mut env = Vec::new();
    let mut warnings = Vec::new();
    if !insecure.is_empty() {
        let text = match users_registries_conf() {
            Some(path) => std::fs::read_to_string(path)?,
            None => String::new(),
        };
        match with_insecure(&text, insecure) {
            Ok(Some(conf)) => {
                let path = folder.join("registries.conf");
                std::fs::write(&path, conf)?;
                env.push((
                    "CONTAINERS_REGISTRIES_CONF".to_owned(),
                    path.display().to_string(),
                ));
            }
            Ok(None) => warnings.push(format!(
                "your registries.conf is in the v1 format, so cachectl cannot mark {} insecure \
                 for the builder; add them to it, or convert it to v2",
                insecure.join(", ")
            )),
            Err(invalid) => warnings.push(invalid.to_string()),
        }
    }
    if let Some((user, password, hosts)) = credentials {
        let path = folder.join("auth.json");
        write_private(&path, auth_file(hosts, user, password).as_bytes())?;
        env.push(("REGISTRY_AUTH_FILE".to_owned(), path.display().to_string()));
    }
    Ok(BuilderEnv {
        vars: env,
        warnings,
    })
}

/// Writes `bytes` to a new file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_hosts_are_added_to_the_users_settings_not_instead_of_them() {
        let users = "unqualified-search-registries = [\"docker.io\"]\n\n[[registry]]\nlocation = \"mirror.example.com\"\n\n[[registry]]\nlocation = \"127.0.0.1:5000\"\ninsecure = false\n";
        let hosts = vec!["127.0.0.1:5000".to_owned(), "10.0.0.2:5000".to_owned()];
        let conf: Table = with_insecure(users, &hosts)
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            conf["unqualified-search-registries"],
            Value::Array(vec![Value::String("docker.io".into())])
        );
        let entries = conf["registry"].as_array().unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].get("insecure"), None, "the mirror was touched");
        assert_eq!(entries[1]["insecure"], Value::Boolean(true));
        assert_eq!(entries[2]["location"].as_str(), Some("10.0.0.2:5000"));
        assert_eq!(entries[2]["insecure"], Value::Boolean(true));
        // An empty file gets only the insecure entries; a v1 file is left alone.
        assert!(
            with_insecure("", &hosts)
                .unwrap()
                .unwrap()
                .contains("10.0.0.2")
        );
        assert_eq!(
            with_insecure("[registries.insecure]\nregistries = []\n", &hosts).unwrap(),
            None
        );
    }

    #[test]
    fn the_auth_file_is_private_and_holds_the_credentials_for_each_host() {
        let folder = tempfile::tempdir().unwrap();
        let hosts = vec!["r.example.com".to_owned()];
        let BuilderEnv {
            vars: env,
            warnings,
        } = builder_env(folder.path(), &[], Some(("ci", "s3cret", &hosts))).unwrap();
        assert!(warnings.is_empty());
        let path = &env[0].1;
        assert_eq!(env[0].0, "REGISTRY_AUTH_FILE");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(json["auths"]["r.example.com"]["auth"], "Y2k6czNjcmV0");
    }
}
