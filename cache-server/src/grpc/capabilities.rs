//! `Capabilities.GetCapabilities`: what this cache serves.

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::build::bazel::semver::SemVer;
use tonic::{Request, Response, Status};

use super::{Cache, MAX_BATCH_BYTES, admit};
use crate::index::Scope;

fn version(minor: i32) -> Option<SemVer> {
    Some(SemVer {
        major: 2,
        minor,
        patch: 0,
        prerelease: String::new(),
    })
}

#[tonic::async_trait]
impl reapi::capabilities_server::Capabilities for Cache {
    async fn get_capabilities(
        &self,
        request: Request<reapi::GetCapabilitiesRequest>,
    ) -> Result<Response<reapi::ServerCapabilities>, Status> {
        let instance = request.get_ref().instance_name.clone();
        admit(&self.state, request.metadata(), &instance, Scope::Read).await?;
        // Updates are offered only to callers that may write.
        let may_write = admit(&self.state, request.metadata(), &instance, Scope::Write)
            .await
            .is_ok();
        use reapi::compressor::Value as Compressor;
        use reapi::digest_function::Value;
        Ok(Response::new(reapi::ServerCapabilities {
            cache_capabilities: Some(reapi::CacheCapabilities {
                digest_functions: vec![Value::Sha256 as i32, Value::Blake3 as i32],
                action_cache_update_capabilities: Some(reapi::ActionCacheUpdateCapabilities {
                    update_enabled: may_write,
                }),
                max_batch_total_size_bytes: MAX_BATCH_BYTES as i64,
                supported_compressors: vec![Compressor::Zstd as i32],
                supported_batch_update_compressors: vec![Compressor::Zstd as i32],
                symlink_absolute_path_strategy:
                    reapi::symlink_absolute_path_strategy::Value::Allowed as i32,
                ..Default::default()
            }),
            execution_capabilities: None,
            low_api_version: version(0),
            high_api_version: version(3),
            ..Default::default()
        }))
    }
}
