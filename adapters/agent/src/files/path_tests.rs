//! The paths an agent refuses, each with its own code (never `io` with the system's text
//! alone): devices, FIFOs and sockets (neither read nor written), names too long, NUL bytes,
//! missing directories, directories where a file is needed.
//!
//! Permission denied cannot be shown here honestly: the tests run as root, which the
//! permission bits do not stop. The e2e test `tests/tests/file_paths.rs` runs the real agent
//! without the capabilities that let root ignore them.

use std::io;
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::net::UnixListener;
use std::path::Path;

use super::disk::absolute;
use super::download::open_regular;
use super::failure::code_of;
use super::partial::{commit, open_partial, partial_of};
use super::upload::check_upload_target;
use super::*;

/// A directory holding a regular file `file`, a directory `dir` and a socket `socket`.
fn scene() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), b"data").unwrap();
    std::fs::create_dir(dir.path().join("dir")).unwrap();
    let listener = UnixListener::bind(dir.path().join("socket")).unwrap();
    // The socket file stays when the listener goes.
    drop(listener);
    dir
}

#[test]
fn name_too_long_and_read_only_file_systems_have_their_codes() {
    let code = |errno| code_of(&io::Error::from_raw_os_error(errno));
    assert_eq!(code(36), Code::NameTooLong); // ENAMETOOLONG
    assert_eq!(code(30), Code::PermissionDenied); // EROFS
    assert_eq!(code(5), Code::Io); // EIO
}

#[test]
fn a_path_with_a_nul_byte_is_an_invalid_path() {
    let refused = absolute("/tmp/a\0b").unwrap_err();
    assert_eq!(refused.code, Code::InvalidPath);
    assert!(
        refused.message.contains("NUL byte (at byte 6)"),
        "{refused:?}"
    );
}

#[test]
fn an_upload_target_must_be_a_regular_file_or_a_new_one_in_an_existing_directory() {
    let scene = scene();
    let at = |name: &str| scene.path().join(name);
    assert_eq!(check_upload_target(&at("file")), Ok(()));
    assert_eq!(check_upload_target(&at("new")), Ok(()));
    for device in ["/dev/zero", "/dev/null"] {
        let refused = check_upload_target(Path::new(device)).unwrap_err();
        assert_eq!(refused.code, Code::NotARegularFile, "{device}");
        assert!(refused.message.contains(device), "{refused:?}");
    }
    let refused = check_upload_target(&at("socket")).unwrap_err();
    assert_eq!(refused.code, Code::NotARegularFile);
    assert_eq!(
        check_upload_target(&at("dir")).unwrap_err().code,
        Code::IsDirectory
    );
    let refused = check_upload_target(&at("missing/new")).unwrap_err();
    assert_eq!(refused.code, Code::NotFound);
    assert_eq!(
        refused.message,
        format!(
            "the directory {} does not exist; create it first",
            at("missing").display()
        )
    );
    assert_eq!(
        check_upload_target(&at("file/new")).unwrap_err().code,
        Code::NotADirectory
    );
    let long = check_upload_target(&at(&"n".repeat(300))).unwrap_err();
    assert_eq!(long.code, Code::NameTooLong, "{long:?}");
}

#[test]
fn a_download_source_must_be_a_regular_file() {
    let scene = scene();
    let at = |name: &str| scene.path().join(name);
    assert_eq!(open_regular(&at("file")).unwrap().1.len(), 4);
    for source in [
        Path::new("/dev/zero"),
        Path::new("/dev/null"),
        &at("socket"),
    ] {
        let refused = open_regular(source).unwrap_err();
        assert_eq!(refused.code, Code::NotARegularFile, "{}", source.display());
    }
    assert_eq!(
        open_regular(&at("dir")).unwrap_err().code,
        Code::IsDirectory
    );
    assert_eq!(
        open_regular(&at("missing")).unwrap_err().code,
        Code::NotFound
    );
    assert_eq!(
        open_regular(&at(&"n".repeat(300))).unwrap_err().code,
        Code::NameTooLong
    );
}

#[test]
fn an_upload_is_never_renamed_over_a_device_put_in_its_place() {
    let scene = scene();
    // The target was a new file when the upload began; a socket stands there at its end.
    let target = scene.path().join("socket");
    let partial = partial_of(&target).unwrap();
    let mut upload = open_partial(&partial, 0).unwrap();
    upload.append(b"new").unwrap();
    let refused = commit(upload, &partial, &target, None).unwrap_err();
    assert_eq!(refused.code, Code::NotARegularFile);
    assert!(
        std::fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert!(!partial.exists(), "the useless partial file is removed");
}

/// The whole operation: an upload to `/dev/zero` fails before a byte is written, with no
/// partial file beside it.
#[tokio::test]
async fn an_upload_to_a_device_fails_at_once_and_leaves_nothing() {
    let (tx, mut rx) = mpsc::channel(8);
    let mut transfers = Transfers::new(tx, PathLocks::default());
    let channel = ChannelId::parse("file-1").unwrap();
    transfers.start(
        channel.clone(),
        FileOp::Upload {
            path: "/dev/zero".into(),
            offset: 0,
        },
    );
    let Event::Frame(AgentMessage::FileError { code, message, .. }) = rx.recv().await.unwrap()
    else {
        panic!("the upload did not fail first");
    };
    assert_eq!(code, Code::NotARegularFile);
    assert!(message.contains("/dev/zero"), "{message}");
    let Event::TransferEnded(id) = rx.recv().await.unwrap() else {
        panic!("the upload did not end");
    };
    assert_eq!(transfers.finished(id), Some(channel));
    assert!(!Path::new("/dev/.zero.rmm-partial").exists());
    assert!(
        std::fs::metadata("/dev/zero")
            .unwrap()
            .file_type()
            .is_char_device()
    );
}
