//! docs/protocol.md's table of API error codes lists every code with the status it is sent
//! with.

use rmm_protocol::api::ApiErrorCode;

const PROTOCOL_MD: &str = include_str!("../../../../docs/protocol.md");

#[test]
fn every_api_error_code_is_documented_with_its_status() {
    for &code in ApiErrorCode::ALL {
        let row = format!("| `{}` |", code.as_str());
        let line = PROTOCOL_MD
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("docs/protocol.md has no row for `{}`", code.as_str()));
        let status = line
            .split('|')
            .nth(2)
            .map(str::trim)
            .expect("a status column");
        // Every description starts with the status, e.g. "404 (files): ...".
        let expected = code
            .description()
            .get(..3)
            .expect("a description starts with its status");
        assert!(
            status.starts_with(expected),
            "`{}` is documented as {status}, sent as {expected}",
            code.as_str()
        );
    }
}
