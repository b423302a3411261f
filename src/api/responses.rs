//! The problem answers that operations document, as `IntoResponses` types
//! for `#[utoipa::path(responses(...))]`: a name per kind of answer instead
//! of the same tuple in every annotation. The `401` of a missing token and
//! the `429` of failed authentications are added to every `/v1` operation
//! in one place (`openapi::V1Auth`), so no annotation names them.
//!
//! Answers shared across resources are here; one resource's own are
//! declared in its file, with the same macro.

use std::collections::BTreeMap;

use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

/// The documented responses of one `IntoResponses` type, by status.
pub type Responses = BTreeMap<String, RefOr<Response>>;

/// An `application/problem+json` answer described as `description`.
pub fn problem(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/problem+json",
        ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
    )
}

/// The answers of every part of a set; no two parts document one status.
pub fn combine(parts: impl IntoIterator<Item = Responses>) -> Responses {
    let mut all = Responses::new();
    for part in parts {
        for (status, response) in part {
            let earlier = all.insert(status, response);
            debug_assert!(earlier.is_none(), "a problem set documents a status twice");
        }
    }
    all
}

/// Declares problem answers as `IntoResponses` types:
///
/// ```text
/// /// doc
/// pub Name: 404 "What the description says";
/// pub Stale: 412 "…", header "ETag": String = "The current version";
/// pub Set = Name + Other;
/// ```
macro_rules! problems {
    () => {};
    (
        $(#[$doc:meta])* $vis:vis $name:ident: $status:literal $description:literal
        $(, header $header:literal: $ty:ty = $header_doc:literal)?;
        $($rest:tt)*
    ) => {
        $(#[$doc])*
        #[derive(Debug)]
        $vis struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> $crate::api::responses::Responses {
                let response = $crate::api::responses::problem($description)
                    $(.header(
                        $header,
                        utoipa::openapi::HeaderBuilder::new()
                            .schema(<$ty as utoipa::PartialSchema>::schema())
                            .description(Some($header_doc))
                            .build(),
                    ))?;
                [(stringify!($status).to_owned(), response.build().into())].into()
            }
        }

        $crate::api::responses::problems!($($rest)*);
    };
    (
        $(#[$doc:meta])* $vis:vis $name:ident = $first:ident $(+ $more:ident)*;
        $($rest:tt)*
    ) => {
        $(#[$doc])*
        #[derive(Debug)]
        $vis struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> $crate::api::responses::Responses {
                $crate::api::responses::combine([
                    <$first as utoipa::IntoResponses>::responses(),
                    $(<$more as utoipa::IntoResponses>::responses(),)*
                ])
            }
        }

        $crate::api::responses::problems!($($rest)*);
    };
}

pub(crate) use problems;

problems! {
    /// A body that is not JSON at all.
    pub BadJson: 400 "Malformed JSON";
    /// A list's `limit`, `cursor` or filters.
    pub BadQuery: 400 "Bad query parameters";
    pub BadIfMatch: 400 "Malformed If-Match";
    pub BadJsonOrIfMatch: 400 "Malformed JSON, or a malformed If-Match";
    /// A tenant key on an admin operation (`auth::Admin`).
    pub NotAdmin: 403 "Not an admin token";
    pub NoTenant: 404 "No such tenant";
    /// Over `MAX_BODY_BYTES`.
    pub TooLarge: 413 "Body over 1 MiB";
    pub NotJson: 415 "Not JSON";
    pub Invalid: 422 "Invalid fields";

    /// What reading a JSON body may answer.
    pub JsonBody = BadJson + TooLarge + NotJson;
    /// The same, for the bodies whose size limit is not documented.
    pub JsonErrors = BadJson + NotJson;
}

#[cfg(test)]
mod tests {
    use utoipa::IntoResponses;

    use super::*;

    #[test]
    fn a_set_holds_each_part_once() {
        let set = JsonBody::responses();
        assert_eq!(set.keys().map(String::as_str).collect::<Vec<_>>(), ["400", "413", "415"]);
        let json = serde_json::to_value(&set["400"]).expect("JSON");
        assert_eq!(json["description"], "Malformed JSON");
        assert_eq!(
            json["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
    }

    problems! {
        Stale: 412 "changed", header "ETag": String = "The current version";
    }

    #[test]
    fn a_header_is_documented_with_its_type() {
        let json = serde_json::to_value(&Stale::responses()["412"]).expect("JSON");
        assert_eq!(json["headers"]["ETag"]["schema"]["type"], "string");
        assert_eq!(json["headers"]["ETag"]["description"], "The current version");
    }
}
