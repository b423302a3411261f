//! Cursor pagination: lists are ordered by id (or name), and the cursor is
//! the last key of a page, opaque to clients. Ids increase within a process,
//! so a row inserted while a client pages never shifts what it sees.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Deserialize;
use utoipa::IntoParams;

use super::problem::{ApiError, FieldError};
use crate::store::{Page, MAX_PAGE};

pub const DEFAULT_LIMIT: u32 = 50;
const MAX_CURSOR_LEN: usize = 512;

/// `limit` and `cursor`, as every list takes them (beside its own filters,
/// read from the same query).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// The page asked for: 400 `invalid_query` for a bad limit or cursor.
    pub fn request(&self) -> Result<PageRequest, ApiError> {
        PageRequest::parse(self.limit, self.cursor.as_deref())
    }
}

/// A decoded page request; `limit + 1` rows are fetched to know whether
/// another page follows.
#[derive(Debug)]
pub struct PageRequest {
    limit: usize,
    after: Option<String>,
}

impl PageRequest {
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        let mut errors = Vec::new();
        if limit == 0 || i64::from(limit) > MAX_PAGE {
            errors.push(FieldError::new("limit", format!("from 1 to {MAX_PAGE}")));
        }
        let after = match cursor {
            None => None,
            Some(cursor) => match decode(cursor) {
                Some(after) => Some(after),
                None => {
                    errors.push(FieldError::new(
                        "cursor",
                        "not a cursor from a `next_cursor` of this list",
                    ));
                    None
                }
            },
        };
        if !errors.is_empty() {
            return Err(ApiError::InvalidQuery(errors));
        }
        Ok(Self { limit: limit as usize, after })
    }

    /// What to ask the store for.
    pub fn store_page(&self) -> Page<'_> {
        Page { after: self.after.as_deref(), limit: self.limit as i64 + 1 }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Cuts the extra row and names the cursor of the next page.
    pub fn finish<T>(
        &self,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> &str,
    ) -> (Vec<T>, Option<String>) {
        if rows.len() > self.limit {
            rows.truncate(self.limit);
            let next = rows.last().map(|row| encode(key(row)));
            (rows, next)
        } else {
            (rows, None)
        }
    }
}

pub fn encode(key: &str) -> String {
    B64.encode(key.as_bytes())
}

fn decode(cursor: &str) -> Option<String> {
    if cursor.is_empty() || cursor.len() > MAX_CURSOR_LEN {
        return None;
    }
    let bytes = B64.decode(cursor).ok()?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
}

/// Declares a list answer `{"data": [...], "next_cursor": …}` for an item type.
macro_rules! list_of {
    ($name:ident, $item:ty) => {
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            pub data: Vec<$item>,
            /// Pass as `cursor` for the next page; `null` on the last one.
            pub next_cursor: Option<String>,
        }
    };
}

pub(crate) use list_of;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let page = PageRequest::parse(Some(2), None).expect("valid");
        let (rows, next) = page.finish(vec!["a", "b", "c"], |s| s);
        assert_eq!(rows, vec!["a", "b"]);
        let next = next.expect("a next page");
        let again = PageRequest::parse(Some(2), Some(&next)).expect("valid");
        assert_eq!(again.store_page().after, Some("b"));
        for bad in ["", "!!!", "%%", &"a".repeat(600)] {
            assert!(PageRequest::parse(None, Some(bad)).is_err(), "{bad:?}");
        }
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(201), None).is_err());
        let (_, last) = PageRequest::parse(Some(5), None).expect("valid").finish(vec!["a"], |s| s);
        assert_eq!(last, None);
    }
}
