//! Protected path patterns and their LPM trie keys.

use std::fmt;

use ward_abi::{PATH_MAX_LEN, PathKey};

/// A protected path: one file, or a subtree (written with a trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathPattern {
    /// Exactly this file.
    File(String),
    /// Everything under this directory; stored with its trailing `/`.
    Subtree(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathPatternError {
    #[error("path `{0}` is not absolute")]
    NotAbsolute(String),
    #[error("path `{0}` is not normalized (no `.`, `..` or empty components)")]
    NotNormalized(String),
    #[error("path `{path}` is {len} bytes; the kernel side matches at most {max}")]
    TooLong {
        path: String,
        len: usize,
        max: usize,
    },
    #[error("path `{0}` contains a NUL byte")]
    Nul(String),
}

impl PathPattern {
    /// Parses `/a/b` (a file) or `/a/b/` (a subtree).
    pub fn parse(s: &str) -> Result<Self, PathPatternError> {
        if !s.starts_with('/') {
            return Err(PathPatternError::NotAbsolute(s.to_owned()));
        }
        if s.contains('\0') {
            return Err(PathPatternError::Nul(s.to_owned()));
        }
        let inner = s.trim_start_matches('/').trim_end_matches('/');
        if s.len() > 1
            && (s.starts_with("//")
                || inner
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == ".."))
        {
            return Err(PathPatternError::NotNormalized(s.to_owned()));
        }
        // A file rule is stored with its NUL, so it needs one byte more.
        let (pattern, stored_len) = if s.ends_with('/') {
            (PathPattern::Subtree(s.to_owned()), s.len())
        } else {
            (PathPattern::File(s.to_owned()), s.len() + 1)
        };
        if stored_len > PATH_MAX_LEN {
            return Err(PathPatternError::TooLong {
                path: s.to_owned(),
                len: s.len(),
                max: PATH_MAX_LEN - 1,
            });
        }
        Ok(pattern)
    }

    pub fn as_str(&self) -> &str {
        match self {
            PathPattern::File(p) | PathPattern::Subtree(p) => p,
        }
    }

    /// The path's prefix length in bits and a key with the path filled in
    /// (the caller sets subject and operation).
    ///
    /// A file includes its terminating NUL in the prefix, so `/etc/shadow`
    /// cannot match `/etc/shadow-`; a subtree ends at its `/`, so `/srv/prod/`
    /// cannot match `/srv/production`.
    pub fn lpm_key(&self) -> (u32, PathKey) {
        let mut key = PathKey::zeroed();
        let bytes = self.as_str().as_bytes();
        key.path[..bytes.len()].copy_from_slice(bytes);
        let len = match self {
            PathPattern::File(_) => bytes.len() + 1,
            PathPattern::Subtree(_) => bytes.len(),
        };
        // len <= PATH_MAX_LEN (256), checked in parse, so this cannot overflow.
        (len as u32 * 8, key)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slash_means_subtree() {
        assert_eq!(
            PathPattern::parse("/srv/prod/").unwrap(),
            PathPattern::Subtree("/srv/prod/".into())
        );
        assert_eq!(
            PathPattern::parse("/etc/shadow").unwrap(),
            PathPattern::File("/etc/shadow".into())
        );
    }

    #[test]
    fn keys_cover_exactly_what_they_should() {
        let (bits, key) = PathPattern::parse("/srv/prod/").unwrap().lpm_key();
        assert_eq!(bits, 10 * 8);
        assert_eq!(&key.path[..10], b"/srv/prod/");
        let (bits, key) = PathPattern::parse("/etc/shadow").unwrap().lpm_key();
        assert_eq!(bits, 12 * 8, "a file's prefix includes its NUL");
        assert_eq!(&key.path[..12], b"/etc/shadow\0");
    }

    #[test]
    fn bad_paths_are_refused_with_the_reason() {
        use PathPatternError::*;
        assert!(matches!(
            PathPattern::parse("etc/shadow"),
            Err(NotAbsolute(_))
        ));
        for bad in ["/a/../b", "/a/./b", "/a//b", "//a", "/a/.."] {
            assert!(
                matches!(PathPattern::parse(bad), Err(NotNormalized(_))),
                "{bad}"
            );
        }
        assert!(matches!(PathPattern::parse("/a\0b"), Err(Nul(_))));
        let long = format!("/{}", "x".repeat(PATH_MAX_LEN - 1));
        assert!(matches!(PathPattern::parse(&long), Err(TooLong { .. })));
        let fits = format!("/{}", "x".repeat(PATH_MAX_LEN - 2));
        assert!(PathPattern::parse(&fits).is_ok());
    }

    #[test]
    fn root_is_a_subtree() {
        assert_eq!(
            PathPattern::parse("/").unwrap(),
            PathPattern::Subtree("/".into())
        );
    }
}
