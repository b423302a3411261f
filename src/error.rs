//! Helpers every layer shares for errors and the text kept of them: walking
//! an error's causes (as linkerd2-proxy's `is_caused_by`), and cutting text
//! to what the store takes.

use std::error::Error;

/// Longest event id (or other short text) kept in the store: ids from
/// Kafka may be anything; an index takes a few KiB at most.
pub const MAX_STORED_ID: usize = 512;
/// Longest error or response excerpt kept in the store.
pub const MAX_STORED_TEXT: usize = 8 * 1024;

/// The first error of type `E` in `error`'s chain of causes, itself included.
pub fn find_cause<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Whether an error of type `E` is in `error`'s chain of causes.
pub fn is_caused_by<E: Error + 'static>(error: &(dyn Error + 'static)) -> bool {
    find_cause::<E>(error).is_some()
}

/// `error` and its causes, `: `-separated (what `{:#}` shows for anyhow).
pub fn source_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Text PostgreSQL will take: no NUL characters, at most `max` bytes.
pub fn storable(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace('\0', "\u{fffd}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn causes_are_found_down_the_chain() {
        let error = Outer(Inner);
        assert!(find_cause::<Inner>(&error).is_some());
        assert!(is_caused_by::<Outer>(&error), "the error itself counts");
        assert!(!is_caused_by::<std::io::Error>(&error));
        assert_eq!(source_chain(&error), "outer: inner");
    }

    #[test]
    fn stored_text_has_no_nul_and_is_bounded() {
        assert_eq!(storable("a\0b", 10), "a\u{fffd}b");
        assert_eq!(storable("héllo", 2), "h");
        assert_eq!(storable("plain", 100), "plain");
    }
}
