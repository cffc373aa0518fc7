//! Test content: reproducible, incompressible or compressible, any size.

use cache_proto::Digest;

/// `len` incompressible bytes from `seed` (xorshift64*), the same on every run.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `len` bytes of text-like content that zstd shrinks well.
pub fn compressible_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut line = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("line {line}: the quick brown fox jumps over the lazy dog\n").as_bytes(),
        );
        line += 1;
    }
    out.truncate(len);
    out
}

/// The BLAKE3 digest of `content`.
pub fn digest(content: &[u8]) -> Digest {
    Digest::of(content)
}

/// The OCI digest (`sha256:hex`) of `content`, as registries name blobs
/// and manifests.
pub fn oci_digest(content: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{:x}", sha2::Sha256::digest(content))
}

/// Every file below `folder`, recursively (none when it does not exist).
pub fn files_under(folder: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}
