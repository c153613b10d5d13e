//! `rmm audit --export ndjson|csv`: the server's audit export, streamed to standard output.

use std::io::Write as _;

use rmm_client::{ApiClient, AuditFilter};

use super::CliError;

/// `rmm audit --export FORMAT`: the server's export, streamed to standard output.
pub async fn export_audit(
    client: &ApiClient,
    filter: &AuditFilter,
    format: &str,
) -> Result<(), CliError> {
    let mut raw = client.audit_export(filter, format).await?;
    let failed = |e: std::io::Error| CliError::Local(format!("cannot write the export: {e}"));
    while let Some(chunk) = raw.chunk().await? {
        std::io::stdout().write_all(&chunk).map_err(failed)?;
    }
    std::io::stdout().flush().map_err(failed)
}
