//! `ActionCache`: action results by action digest, stored as the
//! serialized `ActionResult` the Bazel HTTP protocol stores too. A result
//! whose outputs are not all in the CAS is answered `NOT_FOUND`: a hit the
//! client then fails to download would break its build, a miss only costs
//! it the action. `inline_stdout`, `inline_stderr` and
//! `inline_output_files` are honoured for small outputs.

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use prost::Message;
use tonic::{Request, Response, Status};

use super::objects;
use super::{Cache, checked};
use crate::index::Scope;
use crate::namespaces::Namespaces;
use crate::protocol_names::BazelObject;

/// Largest stored action result read.
const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;
/// Largest output inlined into a result.
const MAX_INLINE_BYTES: u64 = 1024 * 1024;

impl Cache {
    /// Whether every blob `result` names is in the CAS.
    async fn complete(
        &self,
        namespaces: &Namespaces,
        result: &reapi::ActionResult,
        blake3: bool,
    ) -> Result<bool, Status> {
        let mut digests: Vec<reapi::Digest> = Vec::new();
        for file in &result.output_files {
            digests.extend(file.digest.clone());
        }
        for directory in &result.output_directories {
            // The tree and every file in it: a client restoring the
            // directory needs them all.
            let Some(tree) = self
                .tree(namespaces, directory.tree_digest.as_ref(), blake3)
                .await?
            else {
                return Ok(false);
            };
            for folder in tree.root.iter().chain(&tree.children) {
                digests.extend(folder.files.iter().filter_map(|file| file.digest.clone()));
            }
        }
        digests.extend(result.stdout_digest.clone());
        digests.extend(result.stderr_digest.clone());
        for digest in &digests {
            let (hash, _) = checked(Some(digest), blake3)?;
            if !objects::exists(&self.state, namespaces, &BazelObject::blob(hash)).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The `Tree` blob `digest`, if it is stored and readable.
    async fn tree(
        &self,
        namespaces: &Namespaces,
        digest: Option<&reapi::Digest>,
        blake3: bool,
    ) -> Result<Option<reapi::Tree>, Status> {
        let (hash, _) = checked(digest, blake3)?;
        let Some(bytes) = objects::read(
            &self.state,
            namespaces,
            &BazelObject::blob(hash),
            MAX_RESULT_BYTES,
        )
        .await?
        else {
            return Ok(None);
        };
        Ok(reapi::Tree::decode(bytes).ok())
    }

    /// The bytes of the small blob `digest`, if it is stored.
    async fn small_blob(
        &self,
        namespaces: &Namespaces,
        digest: Option<&reapi::Digest>,
        blake3: bool,
    ) -> Result<Option<bytes::Bytes>, Status> {
        let Some(digest) = digest else {
            return Ok(None);
        };
        let (hash, size) = checked(Some(digest), blake3)?;
        if size > MAX_INLINE_BYTES {
            return Ok(None);
        }
        objects::read(
            &self.state,
            namespaces,
            &BazelObject::blob(hash),
            MAX_INLINE_BYTES as usize,
        )
        .await
        .map_err(Status::from)
    }
}

#[tonic::async_trait]
impl reapi::action_cache_server::ActionCache for Cache {
    async fn get_action_result(
        &self,
        request: Request<reapi::GetActionResultRequest>,
    ) -> Result<Response<reapi::ActionResult>, Status> {
        let body = request.get_ref();
        let (namespaces, blake3) = self.open_call(&request, Scope::Read).await?;
        let (hash, _) = checked(body.action_digest.as_ref(), blake3)?;
        let stored = objects::read(
            &self.state,
            &namespaces,
            &BazelObject::action(hash),
            MAX_RESULT_BYTES,
        )
        .await?
        .ok_or_else(|| Status::not_found("no action result"))?;
        let mut result = reapi::ActionResult::decode(stored).map_err(|e| {
            Status::not_found(format!("the stored action result is unreadable: {e}"))
        })?;
        if !self.complete(&namespaces, &result, blake3).await? {
            return Err(Status::not_found(
                "the action result names outputs the CAS no longer holds",
            ));
        }
        if body.inline_stdout
            && let Some(bytes) = self
                .small_blob(&namespaces, result.stdout_digest.as_ref(), blake3)
                .await?
        {
            result.stdout_raw = bytes.to_vec();
        }
        if body.inline_stderr
            && let Some(bytes) = self
                .small_blob(&namespaces, result.stderr_digest.as_ref(), blake3)
                .await?
        {
            result.stderr_raw = bytes.to_vec();
        }
        for index in 0..result.output_files.len() {
            let file = &result.output_files[index];
            if body.inline_output_files.contains(&file.path)
                && let Some(bytes) = self
                    .small_blob(&namespaces, file.digest.as_ref(), blake3)
                    .await?
            {
                result.output_files[index].contents = bytes.to_vec();
            }
        }
        Ok(Response::new(result))
    }

    async fn update_action_result(
        &self,
        request: Request<reapi::UpdateActionResultRequest>,
    ) -> Result<Response<reapi::ActionResult>, Status> {
        let body = request.get_ref();
        let (namespaces, blake3) = self.open_call(&request, Scope::Write).await?;
        let (hash, _) = checked(body.action_digest.as_ref(), blake3)?;
        let result = body
            .action_result
            .clone()
            .ok_or_else(|| Status::invalid_argument("no action_result"))?;
        objects::write(
            &self.state,
            &namespaces,
            &BazelObject::action(hash),
            result.encode_to_vec().into(),
        )
        .await?;
        Ok(Response::new(result))
    }
}
