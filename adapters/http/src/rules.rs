//! Request strings whose schema states the rule the domain checks (a pattern, lengths, a list
//! of values), so that clients, and the contract fuzzing (`scripts/contract-tests.sh`), know
//! what is valid. Parsing accepts any string: the handler's domain parse decides, and its
//! message names the problem (`command is empty`), so schema and parse must agree; the
//! tests below hold each pattern against its parse.
//!
//! Patterns are ECMA-262 as JSON Schema reads them, written to mean the same in Rust's
//! `regex` and Python's `re` (`\uXXXX` escapes, explicit classes rather than `\s`, whose
//! members differ between them).

use std::borrow::Cow;
use std::marker::PhantomData;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type,
};

/// What a [`Text`] must be, as its schema says.
pub trait TextRule: Send + Sync + 'static {
    /// A pattern the whole value matches (anchored with `^...$`).
    const PATTERN: Option<&'static str> = None;
    /// Fewest characters.
    const MIN_LENGTH: Option<usize> = None;
    /// Most characters.
    const MAX_LENGTH: Option<usize> = None;
    /// The only values allowed, when not empty.
    const VALUES: &'static [&'static str] = &[];
}

/// A request string carrying its rule `R` in the spec; any string parses.
pub struct Text<R>(String, PhantomData<fn() -> R>);

impl<R> Text<R> {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into(), PhantomData)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<R> std::fmt::Debug for Text<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Text").field(&self.0).finish()
    }
}

impl<R> std::ops::Deref for Text<R> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<R: TextRule> Type for Text<R> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            pattern: R::PATTERN.map(str::to_owned),
            min_length: R::MIN_LENGTH,
            max_length: R::MAX_LENGTH,
            enum_items: R::VALUES.iter().map(|v| (*v).into()).collect(),
            ..MetaSchema::new("string")
        }))
    }

    fn register(_registry: &mut Registry) {}

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl<R: TextRule> ParseFromJSON for Text<R> {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        match value {
            Some(serde_json::Value::String(s)) => Ok(Self::new(s)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl<R: TextRule> ParseFromParameter for Text<R> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self::new(value))
    }
}

impl<R: TextRule> ToJSON for Text<R> {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(self.0.clone().into())
    }
}

/// White space as Rust's `str::trim` removes it (Unicode `White_Space`).
macro_rules! ws {
    () => {
        "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
    };
}

/// Control characters as Rust's `char::is_control` has them (category Cc).
macro_rules! cc {
    () => {
        "\\u0000-\\u001f\\u007f-\\u009f"
    };
}

/// `rmm_domain::Username`: 1 to 64 of `a-z A-Z 0-9 . _ @ -`.
#[derive(Debug)]
pub enum UsernameRule {}
impl TextRule for UsernameRule {
    const PATTERN: Option<&'static str> = Some("^[a-zA-Z0-9._@-]{1,64}$");
}

/// A new password: at least 8 characters.
#[derive(Debug)]
pub enum PasswordRule {}
impl TextRule for PasswordRule {
    const MIN_LENGTH: Option<usize> = Some(8);
}

/// `rmm_domain::Role::parse`.
#[derive(Debug)]
pub enum RoleRule {}
impl TextRule for RoleRule {
    const VALUES: &'static [&'static str] = &["admin", "technician", "tech", "auditor"];
}

/// `rmm_domain::AgentName`: trimmed, 1 to 128 characters, no control character.
#[derive(Debug)]
pub enum AgentNameRule {}
impl TextRule for AgentNameRule {
    const PATTERN: Option<&'static str> = Some(concat!(
        "^[",
        ws!(),
        "]*[^",
        cc!(),
        ws!(),
        "](?:[^",
        cc!(),
        "]{0,126}[^",
        cc!(),
        ws!(),
        "])?[",
        ws!(),
        "]*$"
    ));
}

/// `rmm_domain::GroupName`: trimmed, 1 to 64 characters, no control character, no `/`.
#[derive(Debug)]
pub enum GroupNameRule {}
impl TextRule for GroupNameRule {
    const PATTERN: Option<&'static str> = Some(concat!(
        "^[",
        ws!(),
        "]*[^",
        cc!(),
        ws!(),
        "/](?:[^",
        cc!(),
        "/]{0,62}[^",
        cc!(),
        ws!(),
        "/])?[",
        ws!(),
        "]*$"
    ));
}

/// `rmm_domain::CommandText`: not blank, no NUL, at most 65,536 characters.
#[derive(Debug)]
pub enum CommandRule {}
impl TextRule for CommandRule {
    const PATTERN: Option<&'static str> =
        Some(concat!("^[", ws!(), "]*[^\\u0000", ws!(), "][^\\u0000]*$"));
    const MAX_LENGTH: Option<usize> = Some(rmm_domain::CommandText::MAX_LEN);
}

/// `rmm_domain::TermName`: 1 to 64 of `A-Z a-z 0-9 . _ + -`.
#[derive(Debug)]
pub enum TermRule {}
impl TextRule for TermRule {
    const PATTERN: Option<&'static str> = Some("^[A-Za-z0-9._+-]{1,64}$");
}

/// A path on an agent: absolute (`/...`, `C:\...` or `C:/...`, `\\server\...`), no NUL, no
/// name over 255 characters (`rmm_domain::check_agent_path`). The path's 4096-byte limit is
/// stated as 4096 characters: a path of ASCII characters is exact, a longer one of wider
/// characters is refused although the schema allows it.
#[derive(Debug)]
pub enum AgentPathRule {}
impl TextRule for AgentPathRule {
    const PATTERN: Option<&'static str> = Some(
        "^(?:/|\\\\\\\\|[A-Za-z]:[\\\\/])(?:[^\\u0000/\\\\]{0,255}[/\\\\])*[^\\u0000/\\\\]{0,255}$",
    );
    const MAX_LENGTH: Option<usize> = Some(rmm_domain::MAX_PATH_BYTES);
}

/// The audit export's formats.
#[derive(Debug)]
pub enum ExportFormatRule {}
impl TextRule for ExportFormatRule {
    const VALUES: &'static [&'static str] = &["ndjson", "csv"];
}

#[cfg(test)]
mod tests {
    use regex::Regex;
    use rmm_domain::{AgentName, CommandText, GroupName, Role, TermName, Username};

    use super::{
        AgentNameRule, AgentPathRule, CommandRule, GroupNameRule, TermRule, TextRule, UsernameRule,
    };

    /// Inputs at every edge of the rules: blank and padded, control and white space of each
    /// kind, separators, lengths at and past each limit, wide characters.
    fn samples() -> Vec<String> {
        let mut s: Vec<String> = [
            "",
            " ",
            "a",
            " a ",
            "\ta\n",
            "a b",
            "a\tb",
            "a\u{1c}",
            "\u{1c}a",
            "\u{85}a\u{85}",
            "\u{a0}a\u{3000}",
            "a\u{200b}",
            "\u{200b}",
            "a/b",
            "/",
            "/etc/hosts",
            "C:\\x",
            "c:/x",
            "C:",
            "\\\\srv\\share",
            "\\x",
            "./x",
            "x\0y",
            "\0",
            "ab\u{7f}",
            "a\u{9f}",
            "é",
            "xterm-256color",
            "vt100\n",
            "a;b",
            "admin@example.org",
            "a b@c",
            "admin",
            "tech",
            "x\n",
            "\u{2028}",
            "a\u{2028}b",
            "😀",
            " 😀 ",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for n in [62, 63, 64, 65, 126, 127, 128, 129, 255, 256] {
            s.push("a".repeat(n));
            s.push(format!(" {} ", "b".repeat(n)));
            s.push(format!("/{}", "c".repeat(n)));
            s.push(format!("/x/{}/y", "d".repeat(n)));
        }
        s
    }

    fn full_match<R: TextRule>() -> Regex {
        Regex::new(R::PATTERN.expect("a pattern")).expect("the pattern compiles")
    }

    fn agrees<R: TextRule>(what: &str, parse: impl Fn(&str) -> bool) {
        let pattern = full_match::<R>();
        for sample in samples() {
            let by_schema = pattern.is_match(&sample)
                && R::MAX_LENGTH.is_none_or(|max| sample.chars().count() <= max);
            assert_eq!(
                by_schema,
                parse(&sample),
                "{what}: the schema and the parse disagree on {sample:?}"
            );
        }
    }

    #[test]
    fn each_pattern_accepts_exactly_what_its_domain_parse_accepts() {
        agrees::<UsernameRule>("username", |s| Username::parse(s).is_ok());
        agrees::<AgentNameRule>("agent name", |s| AgentName::parse(s).is_ok());
        agrees::<GroupNameRule>("group name", |s| GroupName::parse(s).is_ok());
        agrees::<CommandRule>("command", |s| CommandText::parse(s).is_ok());
        agrees::<TermRule>("term", |s| TermName::parse(s).is_ok());
        agrees::<AgentPathRule>("path", |s| {
            let absolute = s.starts_with('/')
                || s.starts_with("\\\\")
                || matches!(s.as_bytes(), [d, b':', b'\\' | b'/', ..] if d.is_ascii_alphabetic());
            absolute && rmm_domain::check_agent_path(s).is_ok()
        });
    }

    #[test]
    fn the_role_values_are_the_ones_role_parse_takes() {
        for value in super::RoleRule::VALUES {
            assert!(Role::parse(value).is_ok(), "{value}");
        }
        for role in Role::ALL {
            assert!(super::RoleRule::VALUES.contains(&role.as_str()), "{role:?}");
        }
    }
}
