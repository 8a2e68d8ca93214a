//! Protocol versions: `MAJOR.MINOR`, same major accepted.

use std::fmt;

/// The protocol version this server speaks.
pub const SERVER_VERSION: Version = Version { major: 1, minor: 0 };

/// A protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// Breaking changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

/// Why a client's version is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not of the form `MAJOR.MINOR`.
    #[error("version must look like 1.0")]
    Malformed,
    /// A major version this server does not serve.
    #[error("protocol {0} is not supported; this server speaks {SERVER_VERSION}")]
    Unsupported(Version),
}

impl Version {
    /// Parses `MAJOR.MINOR`.
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let (major, minor) = text.split_once('.').ok_or(VersionError::Malformed)?;
        let num = |s: &str| s.parse::<u16>().map_err(|_| VersionError::Malformed);
        Ok(Version { major: num(major)?, minor: num(minor)? })
    }

    /// The version to serve a client that asked for `self`.
    ///
    /// Compatibility matrix: every `1.x` is served; messages carry the client's own version
    /// string (minor versions only add optional fields, which older clients ignore). Any other
    /// major needs an upgrade.
    pub fn negotiate(self) -> Result<Version, VersionError> {
        if self.major == SERVER_VERSION.major {
            Ok(self)
        } else {
            Err(VersionError::Unsupported(self))
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility_matrix() {
        assert_eq!(Version::parse("1.0").unwrap().negotiate().unwrap().to_string(), "1.0");
        assert_eq!(Version::parse("1.3").unwrap().negotiate().unwrap().to_string(), "1.3");
        assert!(matches!(Version::parse("2.0").unwrap().negotiate(), Err(VersionError::Unsupported(_))));
        assert!(matches!(Version::parse("0.9").unwrap().negotiate(), Err(VersionError::Unsupported(_))));
        assert_eq!(Version::parse("1"), Err(VersionError::Malformed));
        assert_eq!(Version::parse("a.b"), Err(VersionError::Malformed));
    }
}
