//! Session identifiers.

use std::{fmt, str::FromStr};

/// Identifies one relay session (one circuit). Printed as 16 hex digits; parsed back with
/// [`str::parse`]. Ids are random, so ids from different runs of a relay do not collide in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    pub(crate) fn random() -> Self {
        SessionId(rand::random())
    }

    /// The id as a number.
    pub fn as_u64(&self) -> u64 {
        self.0
    }
}

impl From<u64> for SessionId {
    fn from(value: u64) -> Self {
        SessionId(value)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A string that is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session id {0:?}: expected 1 to 16 hex digits")]
pub struct ParseSessionIdError(String);

impl FromStr for SessionId {
    type Err = ParseSessionIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(ParseSessionIdError(s.to_owned()));
        }
        u64::from_str_radix(s, 16)
            .map(SessionId)
            .map_err(|_| ParseSessionIdError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_prints_and_parses_back() {
        let id = SessionId::random();
        let printed = id.to_string();
        assert_eq!(printed.len(), 16);
        assert_eq!(printed.parse::<SessionId>().unwrap(), id);
        assert_eq!("ff".parse::<SessionId>().unwrap(), SessionId(255));
    }

    #[test]
    fn junk_is_not_a_session_id() {
        for junk in ["", "xyz", "+1", "00000000000000000", " 1"] {
            assert!(junk.parse::<SessionId>().is_err(), "{junk:?}");
        }
    }
}
