//! What every command is given: where this run's records live (the cache
//! server, else local files) and a registry session for its hosts.

use crate::cli::Cli;
use crate::cli::config::ConfigFile;
use crate::client::CacheClient;
use crate::client::records::RecordStore;
use crate::exit::Failure;
use crate::image::Registry;
use crate::image::registry::parse_reference;

/// Where records live for this run: the cache server, else local files.
pub fn records_for(cli: &Cli, file: &ConfigFile) -> Result<RecordStore, Failure> {
    Ok(match cli.cache_url(file) {
        Some(url) => {
            let roots = cli.extra_roots().map_err(Failure::usage)?;
            let namespace = cli.cache_namespace(file).map_err(Failure::usage)?;
            let client =
                CacheClient::new(&url, cli.cache_token.as_deref(), roots).in_namespace(namespace);
            RecordStore::server(client)
        }
        None => RecordStore::local(cli.records_dir()),
    })
}

/// A registry session for `cli` that knows `hosts` (registry hosts such
/// as `registry.example.com:5000`).
pub fn registry_for(cli: &Cli, hosts: impl IntoIterator<Item = String>) -> Registry {
    let hosts: Vec<String> = hosts.into_iter().collect();
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    Registry::new(cli.registry_settings(), &hosts)
}

/// The registry host of a repository or reference (`docker.io` when it
/// names none), by the one reference parser; `None` if it does not parse.
pub fn host_of(reference: &str) -> Option<String> {
    parse_reference(reference)
        .ok()
        .map(|reference| reference.registry().to_owned())
}
