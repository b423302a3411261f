//! Versions as entity tags: a subscription answers `ETag: "<version>"`,
//! and writes honour `If-Match` (RFC 9110 §13.1.1), so that a client
//! changes only what it last saw. A write without `If-Match` still never
//! overwrites what it did not mean to change (see `store::Guarded`).

use axum::extract::FromRequestParts;
use axum::http::header::{HeaderName, ETAG, IF_MATCH};
use axum::http::request::Parts;
use axum::http::HeaderValue;

use super::problem::ApiError;

/// The `ETag` of a version: strong, since every write bumps the version.
pub fn etag(version: i64) -> HeaderValue {
    // Digits, a minus and quotes are always a valid header value.
    HeaderValue::from_str(&version_tag(version))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// The `ETag` header of a version, for a response's headers.
pub fn etag_header(version: i64) -> [(HeaderName, HeaderValue); 1] {
    [(ETAG, etag(version))]
}

fn version_tag(version: i64) -> String {
    format!("\"{version}\"")
}

/// One entity tag of an `If-Match` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    weak: bool,
    opaque: String,
}

/// A request's `If-Match`: absent, `*`, or a list of entity tags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IfMatch {
    #[default]
    Absent,
    Any,
    Tags(Vec<EntityTag>),
}

impl IfMatch {
    /// Checks the precondition against the version the request read:
    /// answers the version the write must still find (`None`: any), or 412.
    pub fn expect(&self, current: i64) -> Result<Option<i64>, ApiError> {
        match self {
            Self::Absent | Self::Any => Ok(None),
            // Strong comparison: a weak tag never matches.
            Self::Tags(tags) if tags.iter().any(|t| !t.weak && t.opaque == current.to_string()) => {
                Ok(Some(current))
            }
            Self::Tags(_) => Err(ApiError::PreconditionFailed { current }),
        }
    }

    /// Parses every `If-Match` header of a request as one list.
    fn parse<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Result<Self, ()> {
        let mut tags = Vec::new();
        let mut any = false;
        let mut present = false;
        for value in values {
            present = true;
            let text = value.as_bytes();
            if text.trim_ascii() == b"*" {
                any = true;
                continue;
            }
            tags.extend(parse_tags(text)?);
        }
        match (present, any, tags.is_empty()) {
            (false, _, _) => Ok(Self::Absent),
            (true, true, true) => Ok(Self::Any),
            // `*` in a list, or a header holding nothing.
            (true, true, false) | (true, false, true) => Err(()),
            (true, false, false) => Ok(Self::Tags(tags)),
        }
    }
}

/// `#entity-tag`: `[W/]"opaque"`, separated by commas with optional spaces.
/// A comma may sit inside the quotes, so this scans rather than splits.
fn parse_tags(text: &[u8]) -> Result<Vec<EntityTag>, ()> {
    let mut tags = Vec::new();
    let mut rest = text;
    loop {
        // Empty list elements are allowed (RFC 9110 §5.6.1).
        rest = rest.trim_ascii_start();
        while let Some(after) = rest.strip_prefix(b",") {
            rest = after.trim_ascii_start();
        }
        if rest.is_empty() {
            return Ok(tags);
        }
        let (weak, quoted) = match rest.strip_prefix(b"W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let body = quoted.strip_prefix(b"\"").ok_or(())?;
        let end = body.iter().position(|&b| b == b'"').ok_or(())?;
        let opaque = &body[..end];
        // etagc: %x21 / %x23-7E / obs-text.
        if !opaque.iter().all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80) {
            return Err(());
        }
        tags.push(EntityTag { weak, opaque: String::from_utf8_lossy(opaque).into_owned() });
        rest = body[end + 1..].trim_ascii_start();
        match rest.first() {
            None => return Ok(tags),
            Some(b',') => {}
            Some(_) => return Err(()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Self::parse(parts.headers.get_all(IF_MATCH).iter()).map_err(|()| ApiError::InvalidIfMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<IfMatch, ()> {
        let values: Vec<HeaderValue> =
            values.iter().map(|v| HeaderValue::from_str(v).expect("header")).collect();
        IfMatch::parse(values.iter())
    }

    fn strong(opaque: &str) -> EntityTag {
        EntityTag { weak: false, opaque: opaque.to_owned() }
    }

    #[test]
    fn parses_star_lists_and_weak_tags() {
        assert_eq!(parse(&[]), Ok(IfMatch::Absent));
        assert_eq!(parse(&[" * "]), Ok(IfMatch::Any));
        assert_eq!(parse(&["\"7\""]), Ok(IfMatch::Tags(vec![strong("7")])));
        assert_eq!(
            parse(&["\"1\", W/\"2\" ,, \"a,b\"", "\"3\""]),
            Ok(IfMatch::Tags(vec![
                strong("1"),
                EntityTag { weak: true, opaque: "2".to_owned() },
                strong("a,b"),
                strong("3"),
            ]))
        );
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in
            ["", " ", "7", "\"7", "W/", "W/7", "\"1\" \"2\"", "\"a\"b", "*, \"1\"", "w/\"1\""]
        {
            assert_eq!(parse(&[bad]), Err(()), "{bad:?}");
        }
        assert_eq!(parse(&["*", "\"1\""]), Err(()), "`*` with tags");
    }

    #[test]
    fn matches_strongly_against_the_current_version() {
        let tags = parse(&["\"4\", \"9\""]).expect("valid");
        assert!(matches!(tags.expect(9), Ok(Some(9))));
        assert!(matches!(tags.expect(5), Err(ApiError::PreconditionFailed { current: 5 })));
        let weak = parse(&["W/\"9\""]).expect("valid");
        assert!(weak.expect(9).is_err(), "a weak tag never matches");
        assert!(matches!(IfMatch::Any.expect(3), Ok(None)));
        assert!(matches!(IfMatch::Absent.expect(3), Ok(None)));
        assert_eq!(etag(42), HeaderValue::from_static("\"42\""));
    }
}
