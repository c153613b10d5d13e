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

/// The conventions of the spec (docs/protocol.md, "API conventions"), checked on the
/// committed document (equal to the served one by the test above): every operation has a
/// unique camelCase `operationId` starting with a verb; every parameter a description and an
/// example, and no router-internal `param<N>` name; every 4xx/5xx answer is the one error
/// schema; an operation that takes a token documents 401, one with parameters or a body 400,
/// one with a JSON body 415; every integer a request carries (parameter or body property) has
/// a `minimum` and a `maximum` no larger than 2^53 - 1 (a fuzzer, or a client, otherwise
/// takes a negative or huge value for valid); every optional property of a request body is
/// `nullable` (the server takes `null` as absent); `servers` is set; no property is an
/// `allOf` over a string enum.
/// A problem when `schema` is an integer without both bounds, or with a bound a JSON number
/// does not carry exactly.
fn unbounded_integer(what: &str, schema: &serde_json::Value) -> Option<String> {
    const EXACT: f64 = 9_007_199_254_740_991.0;
    if schema["type"] != "integer" {
        return None;
    }
    match (schema["minimum"].as_f64(), schema["maximum"].as_f64()) {
        (Some(min), Some(max)) if min >= -EXACT && max <= EXACT => None,
        _ => Some(format!(
            "{what}: an integer without a minimum and a maximum within 2^53 - 1"
        )),
    }
}

#[test]
fn committed_openapi_spec_follows_the_api_conventions() -> anyhow::Result<()> {
    const VERBS: &[&str] = &[
        "get", "list", "create", "update", "delete", "open", "close", "run", "cancel", "write",
        "upload", "download", "register", "revoke", "rotate", "enroll", "login", "logout",
        "change", "export",
    ];
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(committed_path())?)?;
    let mut problems = Vec::new();
    let servers = spec["servers"].as_array().map_or(0, Vec::len);
    if servers == 0 {
        problems.push("`servers` is empty".to_owned());
    }
    let mut ids = std::collections::HashSet::new();
    let paths = spec["paths"].as_object().cloned().unwrap_or_default();
    for (path, operations) in &paths {
        if path.contains("{param") {
            problems.push(format!("{path}: a router-internal parameter name"));
        }
        for (method, op) in operations.as_object().cloned().unwrap_or_default() {
            let at = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"].as_str().unwrap_or_default();
            let verb: String = id.chars().take_while(char::is_ascii_lowercase).collect();
            if !VERBS.contains(&verb.as_str()) || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                problems.push(format!(
                    "{at}: operationId {id:?} is not a camelCase verb name"
                ));
            }
            if !ids.insert(id.to_owned()) {
                problems.push(format!("{at}: operationId {id:?} is not unique"));
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for p in &params {
                let name = p["name"].as_str().unwrap_or_default();
                if name.starts_with("param") {
                    problems.push(format!("{at}: parameter named {name:?}"));
                }
                if p["description"].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("{at}: parameter {name} has no description"));
                }
                if p["schema"]["example"].is_null() && p["example"].is_null() {
                    problems.push(format!("{at}: parameter {name} has no example"));
                }
            }
            let responses = op["responses"].as_object().cloned().unwrap_or_default();
            for (status, response) in &responses {
                let is_error = status.starts_with('4') || status.starts_with('5');
                let schemas: Vec<&serde_json::Value> = response["content"]
                    .as_object()
                    .map(|c| c.values().map(|v| &v["schema"]).collect())
                    .unwrap_or_default();
                let error_body = serde_json::json!({"$ref": "#/components/schemas/ErrorBody"});
                if is_error && (schemas.is_empty() || schemas.iter().any(|s| **s != error_body)) {
                    problems.push(format!("{at}: {status} is not the ErrorBody schema"));
                }
            }
            if op["security"].as_array().is_some_and(|s| !s.is_empty())
                && !responses.contains_key("401")
            {
                problems.push(format!("{at}: takes a token but documents no 401"));
            }
            if (!params.is_empty() || !op["requestBody"].is_null())
                && !responses.contains_key("400")
            {
                problems.push(format!("{at}: takes input but documents no 400"));
            }
            let json_body = op["requestBody"]["content"]
                .as_object()
                .is_some_and(|c| c.keys().any(|t| t.starts_with("application/json")));
            if json_body && !responses.contains_key("415") {
                problems.push(format!("{at}: takes JSON but documents no 415"));
            }
            for p in &params {
                let name = p["name"].as_str().unwrap_or_default();
                problems.extend(unbounded_integer(
                    &format!("{at}: parameter {name}"),
                    &p["schema"],
                ));
            }
            if let Some(body) = op["requestBody"]["content"]
                .as_object()
                .and_then(|c| c.values().next())
                .and_then(|m| m["schema"]["$ref"].as_str())
            {
                let name = body.trim_start_matches("#/components/schemas/");
                let schema = &spec["components"]["schemas"][name];
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                for (field, property) in schema["properties"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                {
                    let what = format!("{at}: body field {name}.{field}");
                    problems.extend(unbounded_integer(&what, &property));
                    problems.extend(unbounded_integer(&what, &property["items"]));
                    if !required.contains(&field.as_str())
                        && property["nullable"] != true
                        && property["default"].is_null()
                    {
                        problems.push(format!("{what}: optional but not nullable"));
                    }
                }
            }
        }
    }
    // A described property that refers to a string enum is an `allOf` of the reference and
    // the description, which openapi-python-client cannot read ("Cannot take allOf a
    // non-object"): it drops the whole model. Such a field carries no `///` description.
    let schemas = spec["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (name, schema) in &schemas {
        let properties = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (field, property) in properties {
            let refs = property["allOf"].as_array().cloned().unwrap_or_default();
            for r in refs.iter().filter_map(|r| r["$ref"].as_str()) {
                let target = r.trim_start_matches("#/components/schemas/");
                if schemas[target]["type"] != "object" {
                    problems.push(format!(
                        "{name}.{field}: allOf over the non-object {target}"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the spec breaks its conventions:\n{}",
        problems.join("\n")
    );
    assert!(ids.len() >= 38, "only {} operations", ids.len());
    Ok(())
}
