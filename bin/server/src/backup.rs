//! `rmm-server backup --to FILE`: a consistent snapshot of the SQLite database, taken while
//! the server runs. PostgreSQL has its own tool for that (pg_dump; docs/deploy.md).

use std::path::Path;

use anyhow::bail;
use rmm_store::SqliteStore;

/// Where docs/deploy.md gives the PostgreSQL recipe.
const PG_RECIPE: &str = "docs/deploy.md, \"Backups\"";

/// Snapshots the database at `url` (`shown` is its printable form) into `to`.
pub(crate) async fn run(url: &str, shown: &str, to: &Path) -> anyhow::Result<()> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        bail!(
            "rmm-server backup snapshots SQLite databases only; {shown} is PostgreSQL: back it up with pg_dump -Fc (see {PG_RECIPE})"
        );
    }
    if !url.starts_with("sqlite:") {
        bail!("DATABASE_URL must start with postgres:// or sqlite:// (got {shown})");
    }
    // symlink_metadata: a dangling link is in the way too.
    if std::fs::symlink_metadata(to).is_ok() {
        bail!(
            "{} already exists: a backup never overwrites a file; pass a new name to --to, or move the old file away first",
            to.display()
        );
    }
    let store = SqliteStore::connect(url).await?;
    store.backup_into(to).await?;
    let size = std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup of {shown} written to {} ({size} bytes)",
        to.display()
    );
    tracing::info!(database = %shown, to = %to.display(), bytes = size, "backup written");
    Ok(())
}
