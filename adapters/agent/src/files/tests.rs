use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use rmm_protocol::limits::{FILE_FRAME_DATA, MAX_LISTING_ENTRIES};
use sha2::{Digest as _, Sha256};

use super::disk::absolute;
use super::download::Hashes;
use super::failure::code_of;
use super::listing::{LISTING_BYTES, list_dir};
use super::partial::{commit, open_partial, partial_of, partial_size};
use super::*;

#[test]
fn partial_files_sit_beside_their_target_behind_a_dot() {
    assert_eq!(
        partial_of(Path::new("/srv/app/run.sh")).unwrap(),
        Path::new("/srv/app/.run.sh.rmm-partial")
    );
    assert_eq!(
        partial_of(Path::new("/x")).unwrap(),
        Path::new("/.x.rmm-partial")
    );
    for directory in ["/", "/tmp/.."] {
        assert_eq!(
            partial_of(Path::new(directory)).unwrap_err().code,
            Code::IsDirectory
        );
    }
    assert_eq!(absolute("tmp/x").unwrap_err().code, Code::NotAbsolute);
    assert_eq!(absolute("").unwrap_err().code, Code::NotAbsolute);
    assert_eq!(absolute("/tmp/x").unwrap(), Path::new("/tmp/x"));
}

#[test]
fn operating_system_errors_map_to_the_protocols_codes() {
    let code = |errno| code_of(&io::Error::from_raw_os_error(errno)).as_str();
    assert_eq!(code(2), "not_found"); // ENOENT
    assert_eq!(code(13), "permission_denied"); // EACCES
    assert_eq!(code(1), "permission_denied"); // EPERM
    assert_eq!(code(21), "is_directory"); // EISDIR
    assert_eq!(code(20), "not_a_directory"); // ENOTDIR
    assert_eq!(code(28), "disk_full"); // ENOSPC
    assert_eq!(code(122), "disk_full"); // EDQUOT
    assert_eq!(code(5), "io"); // EIO
    let failure = Failure::io("create", Path::new("/x"), &io::Error::from_raw_os_error(13));
    assert_eq!(
        failure.message,
        "cannot create /x: Permission denied (os error 13)"
    );
}

#[test]
fn a_listing_is_sorted_by_name_typed_without_following_links_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("b.txt"), b"hello").unwrap();
    std::fs::write(root.join("a.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("a.sh"), std::fs::Permissions::from_mode(0o4750)).unwrap();
    std::fs::create_dir(root.join("c")).unwrap();
    std::os::unix::fs::symlink("b.txt", root.join("d")).unwrap();
    std::os::unix::fs::symlink("c", root.join("e")).unwrap();
    let entries = list_dir(root, MAX_LISTING_ENTRIES, LISTING_BYTES).unwrap();
    let summary: Vec<(&str, &str, u64)> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind.as_str(), e.size))
        .collect();
    assert_eq!(
        summary[..],
        [
            ("a.sh", "file", 10),
            ("b.txt", "file", 5),
            ("c", "dir", summary[2].2),
            // A link's size is its own (the length of the path it holds).
            ("d", "symlink", 5),
            ("e", "symlink", 1),
        ]
    );
    assert_eq!(entries[0].mode, Some(0o4750));
    let now = now_secs();
    assert!(
        entries
            .iter()
            .all(|e| e.modified.is_some_and(|m| (now - m).abs() < 60))
    );

    let first_two = list_dir(root, 2, LISTING_BYTES).unwrap();
    assert_eq!(
        first_two
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["a.sh", "b.txt"]
    );
    // The byte bound keeps a whole prefix too.
    let one = serde_json::to_string(&entries[0]).unwrap().len() + 1;
    let by_bytes = list_dir(root, MAX_LISTING_ENTRIES, one + 1).unwrap();
    assert_eq!(by_bytes.len(), 1);
    assert_eq!(
        list_dir(&root.join("b.txt"), 10, LISTING_BYTES)
            .unwrap_err()
            .code,
        Code::NotADirectory
    );
    assert_eq!(
        list_dir(&root.join("missing"), 10, LISTING_BYTES)
            .unwrap_err()
            .code,
        Code::NotFound
    );
}

fn now_secs() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_secs()).unwrap()
}

#[test]
fn a_partial_file_planted_as_a_symlink_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious data").unwrap();
    let partial = dir.path().join(".upload.rmm-partial");
    std::os::unix::fs::symlink(&victim, &partial).unwrap();
    // A resume refuses it without touching what it points to.
    let refused = open_partial(&partial, 5).unwrap_err();
    assert_eq!(refused.code, Code::BadOffset);
    assert_eq!(partial_size(&partial).unwrap(), 0);
    // A fresh upload replaces the link by a file of its own.
    let mut fresh = open_partial(&partial, 0).unwrap();
    fresh.append(b"new").unwrap();
    assert!(
        std::fs::symlink_metadata(&partial)
            .unwrap()
            .file_type()
            .is_file()
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious data");
    assert_eq!(partial_size(&partial).unwrap(), 3);
}

#[test]
fn a_resume_cuts_the_partial_back_to_its_offset_and_hashes_what_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join(".f.rmm-partial");
    std::fs::write(&partial, b"hello world").unwrap();
    let mut resumed = open_partial(&partial, 5).unwrap();
    assert_eq!(resumed.len, 5);
    resumed.append(b", you").unwrap();
    let target = dir.path().join("f");
    let sha = commit(resumed, &partial, &target, None).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"hello, you");
    assert_eq!(sha, hex::encode(Sha256::digest(b"hello, you")));
    assert!(!partial.exists());
    let short = open_partial(&partial, 1).unwrap_err();
    assert_eq!(short.code, Code::BadOffset);
}

#[test]
fn a_replaced_file_keeps_its_permissions_but_not_setuid() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("run.sh");
    std::fs::write(&target, b"old").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o4751)).unwrap();
    let partial = partial_of(&target).unwrap();
    let mut upload = open_partial(&partial, 0).unwrap();
    upload.append(b"new").unwrap();
    commit(
        upload,
        &partial,
        &target,
        Some(&hex::encode(Sha256::digest(b"new")).to_uppercase()),
    )
    .unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o751);
}

#[test]
fn the_range_hash_of_a_download_covers_the_bytes_from_its_offset() {
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    for offset in [0u64, 1, 4095, 4096, 9_999, 10_000] {
        let mut hashes = Hashes::new(offset);
        for piece in data.chunks(4096) {
            hashes.update(piece);
        }
        let (size, whole, range) = hashes.finish();
        assert_eq!(size, 10_000);
        assert_eq!(whole, hex::encode(Sha256::digest(&data)));
        let from = usize::try_from(offset).unwrap();
        assert_eq!(
            range,
            hex::encode(Sha256::digest(&data[from..])),
            "{offset}"
        );
    }
}

#[tokio::test]
async fn path_locks_serialise_one_path_and_are_forgotten_when_free() {
    let locks = PathLocks::default();
    let first = locks.lock(PathBuf::from("/a")).await;
    let other = locks.lock(PathBuf::from("/b")).await;
    assert_eq!(locks.len(), 2);
    let waiting = tokio::spawn({
        let locks = locks.clone();
        async move { locks.lock(PathBuf::from("/a")).await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    drop(first);
    let second = waiting.await.unwrap();
    drop((second, other));
    assert_eq!(locks.len(), 0);
}

#[tokio::test]
async fn an_upload_beyond_the_window_fails_without_the_connection_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("big");
    let (tx, mut rx) = mpsc::channel(8);
    let mut transfers = Transfers::new(tx, PathLocks::default());
    let channel = ChannelId::parse("file-1").unwrap();
    transfers.start(
        channel.clone(),
        FileOp::Upload {
            path: target.display().to_string(),
            offset: 0,
        },
    );
    // A server ignoring the window: far more than it may send, in one go. `input` never
    // waits (the task does not even get to run in between).
    let frame = Bytes::from(vec![7u8; FILE_FRAME_DATA]);
    for n in 0..(3 * FILE_WINDOW / FILE_FRAME_DATA as u64) {
        transfers.input(
            &channel,
            FileInput::Data {
                offset: n * FILE_FRAME_DATA as u64,
                data: frame.clone(),
            },
        );
    }
    let mut errors = Vec::new();
    loop {
        match rx.recv().await.unwrap() {
            Event::Frame(AgentMessage::FileError { code, message, .. }) => {
                errors.push((code, message));
            }
            Event::Frame(AgentMessage::FileAck { .. }) => {}
            Event::TransferEnded(id) => {
                assert_eq!(transfers.finished(id), Some(channel));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, Code::Io);
    assert!(errors[0].1.contains("flow-control window"), "{errors:?}");
    assert!(!target.exists());
    assert!(transfers.is_empty());
}
