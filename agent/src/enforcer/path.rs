//! Path patterns: what policy and grants name. The kernel never sees them;
//! `objects.rs` turns each into the inodes it names.

use std::fmt;

use ward_abi::PATH_MAX_LEN;

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
    #[error("path `{path}` is {len} bytes; a path holds at most {max}")]
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
        if s.len() > PATH_MAX_LEN {
            return Err(PathPatternError::TooLong {
                path: s.to_owned(),
                len: s.len(),
                max: PATH_MAX_LEN,
            });
        }
        Ok(if s.ends_with('/') {
            PathPattern::Subtree(s.to_owned())
        } else {
            PathPattern::File(s.to_owned())
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            PathPattern::File(p) | PathPattern::Subtree(p) => p,
        }
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
        let long = format!("/{}", "x".repeat(PATH_MAX_LEN));
        assert!(matches!(PathPattern::parse(&long), Err(TooLong { .. })));
        let fits = format!("/{}", "x".repeat(PATH_MAX_LEN - 1));
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
