//! Raising this process's open-file limit (`RLIMIT_NOFILE`) to what a run needs, through
//! nix's safe API: every simulated agent holds one socket.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The open-file limit after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nofile {
    pub soft: u64,
    pub hard: u64,
    /// Whether `soft` covers what was asked for.
    pub enough: bool,
}

/// Raises the soft limit to `needed` (at most the hard limit). Raising the hard limit needs
/// `CAP_SYS_RESOURCE`; it is tried and, when refused, the soft limit goes as high as the
/// hard one allows and `enough` says whether that suffices.
///
/// # Errors
/// When the limits cannot be read.
pub fn raise_nofile(needed: u64) -> nix::Result<Nofile> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= needed {
        return Ok(Nofile {
            soft,
            hard,
            enough: true,
        });
    }
    if hard < needed && setrlimit(Resource::RLIMIT_NOFILE, needed, needed).is_ok() {
        return Ok(Nofile {
            soft: needed,
            hard: needed,
            enough: true,
        });
    }
    let target = needed.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    Ok(Nofile {
        soft: target,
        hard,
        enough: target >= needed,
    })
}
