//! The committed OpenAPI document (`openapi/openapi.json`) must match what the server serves at
//! `/api/v1/openapi.json`. Clients and reviewers read the committed file, so a change to the
//! HTTP API that forgets to regenerate it fails here.
//!
//! Regenerate with `UPDATE_OPENAPI=1 cargo test -p rmm-server --test openapi_spec` (or
//! `scripts/update-openapi.sh`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rmm_application::Config;
use rmm_auth::{Jwt, JwtSecret};
use rmm_server::wiring::{build_app, openapi_spec};
use rmm_store::SqliteStore;

const REGENERATE: &str =
    "UPDATE_OPENAPI=1 cargo test -p rmm-server --test openapi_spec (or scripts/update-openapi.sh)";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json")
}

/// Only trailing whitespace (per line and at the end) is not significant: editors and
/// `git` hooks may touch it, nothing else may.
fn normalise(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

#[tokio::test]
async fn committed_openapi_spec_is_current() -> anyhow::Result<()> {
    // The spec does not depend on the store's contents, but building the app needs one.
    let dir = tempfile::tempdir()?;
    let store =
        SqliteStore::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await?;
    let app = build_app(Arc::new(store), Config::default());
    let jwt = Arc::new(Jwt::new(
        &JwtSecret::parse(&"openapi-spec-test-secret-".repeat(2))?,
        Duration::from_secs(60),
    ));
    let generated = openapi_spec(app, jwt);

    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, format!("{}\n", normalise(&generated)))?;
        eprintln!("wrote {}", path.display());
        return Ok(());
    }

    let committed = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the committed spec {}: {e}; generate it with: {REGENERATE}",
            path.display()
        )
    })?;
    let (committed, generated) = (normalise(&committed), normalise(&generated));
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .enumerate()
            .find(|(_, (c, g))| c != g)
            .map_or_else(
                || {
                    format!(
                        "one is a prefix of the other ({} vs {} lines)",
                        committed.lines().count(),
                        generated.lines().count()
                    )
                },
                |(n, (c, g))| format!("line {}:\n  committed: {c}\n  generated: {g}", n + 1),
            );
        panic!(
            "openapi/openapi.json is stale: the HTTP API changed without regenerating it.\n\
             First difference at {first_difference}\n\
             Regenerate it with: {REGENERATE}"
        );
    }
    Ok(())
}
