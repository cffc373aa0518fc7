//! The real `buildah`, as a CI job runs it in this sandbox: vfs storage and
//! chroot isolation in a scratch folder, and nothing else. In particular no
//! registries.conf: reaching a plain-HTTP test registry is cachectl's job.

use std::path::Path;

/// A `buildah` on PATH that appends a line to `marker` for every `bud`,
/// then runs the real one with vfs storage and chroot isolation under
/// `scratch`. Returns the variables to run cachectl with.
pub fn counting_buildah(marker: &Path, scratch: &Path) -> Vec<(String, String)> {
    counting_buildah_on(marker, scratch, "vfs")
}

/// [`counting_buildah`] with the storage `driver` (`vfs`, `overlay`).
pub fn counting_buildah_on(marker: &Path, scratch: &Path, driver: &str) -> Vec<(String, String)> {
    let bin = scratch.join("bin");
    std::fs::create_dir_all(&bin).expect("creating the wrapper's folder");
    let wrapper = bin.join("buildah");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ \"$1\" = bud ] && echo built >> {}\nexec /usr/bin/buildah \"$@\"\n",
            marker.display()
        ),
    )
    .expect("writing the wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("making the wrapper executable");
    let storage = scratch.join("storage.conf");
    std::fs::write(
        &storage,
        format!(
            "[storage]\ndriver = \"{driver}\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/runroot\"\n",
            scratch.display()
        ),
    )
    .expect("writing storage.conf");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    vec![
        ("PATH".into(), path),
        (
            "CONTAINERS_STORAGE_CONF".into(),
            storage.display().to_string(),
        ),
        ("BUILDAH_ISOLATION".into(), "chroot".into()),
    ]
}

/// `env` as the `(&str, &str)` pairs `Project::cachectl` takes.
pub fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
