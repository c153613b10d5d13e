//! [`Token`]: a technician's JWT, checked to travel in a header, never shown by `Debug`.

use std::fmt;

use serde::Deserialize;

/// A technician's JWT. Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// Why a string is not usable as a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenParseError {
    #[error("the token is empty")]
    Empty,
    #[error("the token contains whitespace or control characters")]
    BadCharacter,
}

impl Token {
    /// A token as stored or pasted: surrounding whitespace is trimmed.
    ///
    /// # Errors
    /// [`TokenParseError`] when it is empty or has inner whitespace or control characters
    /// (it could not travel in an `Authorization` header).
    pub fn parse(value: &str) -> Result<Self, TokenParseError> {
        let value = value.trim();
        if value.is_empty() {
            Err(TokenParseError::Empty)
        } else if value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            Err(TokenParseError::BadCharacter)
        } else {
            Ok(Self(value.to_owned()))
        }
    }

    /// The secret itself, to store or send.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::parse(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tokens_are_trimmed_validated_and_never_shown() {
        let token = Token::parse(" abc.def.ghi\n").unwrap();
        assert_eq!(token.expose(), "abc.def.ghi");
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert_eq!(Token::parse("  "), Err(TokenParseError::Empty));
        assert_eq!(Token::parse("a b"), Err(TokenParseError::BadCharacter));
    }
}
