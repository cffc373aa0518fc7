//! The image config (OCI `config.v1`, or Docker's, which has the same
//! shape): the fields cachectl reads or changes are typed, every other one
//! is kept as it came, so a base's settings reach the image on top of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::invalid::Invalid;

/// An image config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// When the image was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// e.g. `amd64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// e.g. `linux`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// How a container of the image runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    /// The layers' uncompressed digests.
    #[serde(default)]
    pub rootfs: RootFs,
    /// One entry per step that made the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<History>>,
    /// `variant`, `author`, `container_config`, ...: kept.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// How a container of the image runs (the config's `config`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// `NAME=value` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// The working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The command (the entrypoint's arguments when there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `ExposedPorts`, `Volumes`, `StopSignal`, ...: kept.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The config's `rootfs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The uncompressed digest of each layer, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        Self {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One step of the image's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// A comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `author`, `empty_layer`, ...: kept.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl ImageConfig {
    /// Parses a config blob; `what` names the image in the error.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, Invalid> {
        serde_json::from_slice(bytes)
            .map_err(|e| Invalid(format!("{what}: the image config is not valid: {e}")))
    }

    /// The config as the bytes of a new blob (keys sorted, as cachectl has
    /// always written them).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Typed strings, maps and lists: serialising cannot fail.
        super::manifest::to_bytes(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Adds a layer on top: its uncompressed digest and the step that made
    /// it, both at `created`.
    pub fn push_layer(&mut self, diff_id: &str, created: &str, step: History) {
        self.created = Some(created.to_owned());
        self.rootfs.diff_ids.push(diff_id.to_owned());
        self.history.get_or_insert_default().push(History {
            created: Some(created.to_owned()),
            ..step
        });
    }

    /// The run settings, made empty when the config had none.
    pub fn run_config(&mut self) -> &mut RunConfig {
        self.config.get_or_insert_default()
    }

    /// The image's environment (`NAME=value`), empty when it has none.
    pub fn env(&self) -> &[String] {
        self.config
            .as_ref()
            .and_then(|config| config.env.as_deref())
            .unwrap_or_default()
    }

    /// The image's labels, empty when it has none.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.config
            .as_ref()
            .and_then(|config| config.labels.clone())
            .unwrap_or_default()
    }
}

impl RunConfig {
    /// Sets label `name` to `value`.
    pub fn set_label(&mut self, name: &str, value: &str) {
        self.labels
            .get_or_insert_default()
            .insert(name.to_owned(), value.to_owned());
    }

    /// Adds `port` to the ports the image exposes (`ExposedPorts`), beside
    /// the base's.
    pub fn expose(&mut self, port: &ExposedPort) {
        let ports = self
            .other
            .entry("ExposedPorts")
            .or_insert_with(|| Value::Object(Map::new()));
        if !ports.is_object() {
            *ports = Value::Object(Map::new());
        }
        if let Value::Object(ports) = ports {
            ports.insert(port.to_string(), Value::Object(Map::new()));
        }
    }
}

/// A port an image exposes, as a Dockerfile's `EXPOSE` names it: `8000`
/// (TCP), `8000/tcp`, `53/udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExposedPort {
    /// The port number.
    pub number: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: &'static str,
}

impl ExposedPort {
    /// Reads `8000`, `8000/tcp`, `53/udp` or `9/sctp`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let (number, protocol) = text.trim().split_once('/').unwrap_or((text.trim(), "tcp"));
        let protocol = match protocol.to_ascii_lowercase().as_str() {
            "tcp" => "tcp",
            "udp" => "udp",
            "sctp" => "sctp",
            _ => {
                return Err(Invalid(format!(
                    "{text:?}: the protocol is tcp, udp or sctp"
                )));
            }
        };
        match number.parse::<u16>() {
            Ok(number) if number > 0 => Ok(Self { number, protocol }),
            _ => Err(Invalid(format!("{text:?} is not a port (1 to 65535)"))),
        }
    }
}

impl std::fmt::Display for ExposedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.number, self.protocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_ports_read_as_expose_names_them_and_join_the_bases() {
        assert_eq!(ExposedPort::parse("8000").unwrap().to_string(), "8000/tcp");
        assert_eq!(ExposedPort::parse("53/UDP").unwrap().to_string(), "53/udp");
        for bad in ["0", "70000", "http", "80/icmp", ""] {
            assert!(ExposedPort::parse(bad).is_err(), "{bad}");
        }
        let mut config = ImageConfig::parse(
            br#"{"config": {"ExposedPorts": {"9000/tcp": {}}}, "rootfs": {"type": "layers", "diff_ids": []}}"#,
            "test",
        )
        .unwrap();
        config
            .run_config()
            .expose(&ExposedPort::parse("8000").unwrap());
        let written: Value = serde_json::from_slice(&config.to_bytes()).unwrap();
        assert_eq!(
            written["config"]["ExposedPorts"],
            serde_json::json!({"8000/tcp": {}, "9000/tcp": {}})
        );
    }

    #[test]
    fn unknown_fields_survive_and_keys_stay_sorted() {
        let text = br#"{"architecture":"amd64","author":"x","config":{"Cmd":["sh"],"ExposedPorts":{"80/tcp":{}},"Labels":null},"created":"2020-01-01T00:00:00Z","history":[{"created_by":"base","empty_layer":true}],"os":"linux","rootfs":{"diff_ids":["sha256:aa"],"type":"layers"}}"#;
        let config = ImageConfig::parse(text, "test").unwrap();
        assert_eq!(config.other["author"], "x");
        let run = config.config.as_ref().unwrap();
        assert_eq!(run.other["ExposedPorts"]["80/tcp"], serde_json::json!({}));
        assert_eq!(run.labels, None);
        let history = config.history.as_ref().unwrap();
        assert_eq!(history[0].other["empty_layer"], true);
        // Written back: the same fields in sorted order; `"Labels": null`
        // is the same as no labels.
        let written = String::from_utf8(config.to_bytes()).unwrap();
        assert_eq!(
            written,
            String::from_utf8(text.to_vec())
                .unwrap()
                .replace(",\"Labels\":null", "")
        );
    }

    #[test]
    fn a_config_without_rootfs_or_history_gets_them_when_a_layer_is_added() {
        let mut config = ImageConfig::parse(b"{}", "test").unwrap();
        let step = History {
            created_by: Some("cachectl".into()),
            ..History::default()
        };
        config.push_layer("sha256:bb", "1970-01-01T00:00:00Z", step);
        assert_eq!(config.rootfs.kind, "layers");
        assert_eq!(config.rootfs.diff_ids, ["sha256:bb"]);
        assert_eq!(config.history.as_ref().unwrap().len(), 1);
        assert_eq!(config.created.as_deref(), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn a_config_that_is_not_one_is_an_error_naming_the_image() {
        let error = ImageConfig::parse(br#"{"config":{"Env":"PATH=/bin"}}"#, "r.io/acme/base:1")
            .unwrap_err();
        assert!(error.0.contains("r.io/acme/base:1"), "{error}");
    }
}
