//! The data folder and the private files in it (mode 0700 and 0600, whatever the umask).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Creates the data folder (and missing parents) with mode 0700, whatever the umask. An existing
/// folder's mode is left alone, with a warning when other users may enter it: it may be a mount
/// point or a folder the operator prepared (a backup group, systemd's StateDirectoryMode=), and
/// the files that matter in it are 0600 anyway.
pub(crate) fn data_folder(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            warn_if_open(dir, &meta);
            Ok(())
        }
        Ok(_) => bail!(
            "cannot create the data folder {}: a file is in the way",
            dir.display()
        ),
        // Missing, or not reachable: creating it says why in the error.
        Err(_) => {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(dir)
                .with_context(|| format!("cannot create the data folder {}", dir.display()))?;
            #[cfg(unix)]
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
            Ok(())
        }
    }
}

/// Warns (once per run) that `dir` is open to group or other users.
fn warn_if_open(dir: &Path, meta: &std::fs::Metadata) {
    #[cfg(unix)]
    {
        static WARNED: std::sync::Once = std::sync::Once::new();
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
        if mode & 0o077 != 0 {
            WARNED.call_once(|| {
                tracing::warn!(
                    path = %dir.display(),
                    "the data folder is mode {mode:04o}, open to other users; restrict it with `chmod 700 {}`",
                    dir.display()
                );
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, meta);
}

pub(crate) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        data_folder(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `contents` to `path` readable by the owner only, replacing any previous file whole:
/// a new file is written beside it and renamed over it, so a crash leaves the old or the new.
pub(crate) fn replace_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".new");
    let partial = PathBuf::from(partial);
    // A leftover from a crash may have any mode; `write_private` only sets it on creation.
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", partial.display())),
    }
    write_private(&partial, contents)?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot replace {}", path.display()))
}
