//! Typed calls to the cache server's native API that every suite makes:
//! a blob in and out of the CAS by digest, and the stats. The free
//! functions take any client and base URL (a replica, nginx in front of
//! several); [`CacheServer`]'s methods call them on one server.

use bytes::Bytes;
use cache_proto::body::Stats;
use cache_proto::{Digest, routes};
use reqwest::StatusCode;

use crate::CacheServer;
use crate::data::digest;

/// `PUT /v1/cas/{digest of content}` at `base`; the status (a transport
/// error panics: see [`try_put_blob`]).
pub async fn put_blob(client: &reqwest::Client, base: &str, content: &[u8]) -> StatusCode {
    try_put_blob(client, base, &digest(content), content.to_vec())
        .await
        .expect("an answer to the PUT")
}

/// `GET /v1/cas/{name}` at `base`: the status and the whole body (a
/// transport error panics: see [`try_get_blob`]).
pub async fn get_blob(client: &reqwest::Client, base: &str, name: &Digest) -> (StatusCode, Bytes) {
    try_get_blob(client, base, name)
        .await
        .expect("an answer to the GET")
}

/// `PUT /v1/cas/{name}` of `content` at `base`.
pub async fn try_put_blob(
    client: &reqwest::Client,
    base: &str,
    name: &Digest,
    content: impl Into<Bytes>,
) -> reqwest::Result<StatusCode> {
    let url = format!("{base}{}", routes::cas(name));
    Ok(client.put(url).body(content.into()).send().await?.status())
}

/// `GET /v1/cas/{name}` at `base`: the status and the whole body.
pub async fn try_get_blob(
    client: &reqwest::Client,
    base: &str,
    name: &Digest,
) -> reqwest::Result<(StatusCode, Bytes)> {
    let response = client
        .get(format!("{base}{}", routes::cas(name)))
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.bytes().await?))
}

impl CacheServer {
    /// Uploads `content` under its digest; the status.
    pub async fn put_blob(&self, content: &[u8]) -> StatusCode {
        put_blob(&self.client, &self.base_url(), content).await
    }

    /// Downloads the blob `name`: the status and the body.
    pub async fn get_blob(&self, name: &Digest) -> (StatusCode, Bytes) {
        get_blob(&self.client, &self.base_url(), name).await
    }

    /// `GET /v1/stats`, typed.
    pub async fn stats(&self) -> Stats {
        let value = self.get_json(routes::STATS, None).await;
        serde_json::from_value(value).expect("the stats parse")
    }
}
