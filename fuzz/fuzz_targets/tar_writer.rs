//! The app layer's tar writer: any file name, link target and content a
//! Unix file system can hold come back byte for byte from a standard tar
//! reader, whatever their length or encoding.
#![no_main]

use cache_cli::pack::tar_entry::{EntryKind, append};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // name \0 target \0 content: the name and target as a file system has
    // them (relative, non-empty components, no NUL).
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(name), Some(target), Some(content)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let valid_path = |p: &[u8]| {
        !p.is_empty()
            && !p.starts_with(b"/")
            && p.split(|&b| b == b'/')
                .all(|c| !c.is_empty() && c != b"." && c != b".." && c.len() <= 255)
    };
    // The tar crate's reader splits PAX records at newlines (POSIX does
    // not, nor do Go's archive/tar and GNU tar, which read such names
    // fine), so names and targets with a newline cannot be checked here.
    if !valid_path(name) || target.is_empty() || name.contains(&b'\n') || target.contains(&b'\n') {
        return;
    }
    let mut builder = tar::Builder::new(Vec::new());
    append(
        &mut builder,
        name,
        EntryKind::File {
            size: content.len() as u64,
            executable: content.len() % 2 == 1,
        },
        0,
        content,
    )
    .expect("appending a file");
    let link_name = [name, b".link"].concat();
    append(
        &mut builder,
        &link_name,
        EntryKind::Symlink(target),
        0,
        &[][..],
    )
    .expect("appending a link");
    let archive = builder.into_inner().expect("finishing the archive");

    let mut reader = tar::Archive::new(&archive[..]);
    let mut entries = reader.entries().expect("entries");
    let mut file = entries.next().expect("the file").expect("a valid entry");
    assert_eq!(&*file.path_bytes(), name);
    let mut read = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut read).expect("its content");
    assert_eq!(read, content);
    drop(file);
    let link = entries.next().expect("the link").expect("a valid entry");
    assert_eq!(&*link.path_bytes(), &link_name[..]);
    assert_eq!(link.link_name_bytes().as_deref(), Some(target));
    assert!(entries.next().is_none());
});
