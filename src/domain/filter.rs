//! Content filters: a subscription may ask only for events whose `data`
//! (or `type`, `source`) passes a condition, written in one JSON form:
//!
//! ```json
//! {"data.amount": {"$gte": 100}, "$or": [{"type": "order.paid"}, {"data.vip": true}]}
//! ```
//!
//! An object's keys all hold (an implicit `$and`). A key is a path
//! (`type`, `source`, `data` or `data.a.b`; a number indexes an array) or
//! `$and` / `$or` (arrays of filters) or `$not` (a filter). A path's value
//! is an object of operators (`$eq $neq $in $nin $gt $gte $lt $lte $exists
//! $prefix`), all of which hold, or any other JSON value, which it must
//! equal. Parsed and bounded once, when the subscription is written;
//! evaluating one allocates nothing.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// The compact JSON of a filter, at most.
pub const MAX_BYTES: usize = 4096;
/// Objects inside one another (`$and`, `$or` and `$not` each add one).
pub const MAX_DEPTH: usize = 5;
/// Operators over the whole filter (a plain value counts as one `$eq`).
pub const MAX_CONDITIONS: usize = 64;
/// Segments of a path after `data`.
pub const MAX_PATH_SEGMENTS: usize = 10;
/// Values of one `$in` or `$nin`.
pub const MAX_LIST: usize = 100;

/// A filter that parsed and is within the bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    node: Node,
    /// As written, for answers to show.
    json: Value,
}

/// Why a filter was refused: where (a JSON pointer below the filter, `""`
/// for the whole) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub at: String,
    pub message: String,
}

/// What a filter is evaluated against; `data` is parsed once per event,
/// whatever the number of subscriptions that look at it.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    pub event_type: &'a str,
    pub source: &'a str,
    pub data: &'a Value,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Field(FieldPath, Vec<Op>),
}

#[derive(Debug, Clone, PartialEq)]
enum FieldPath {
    Type,
    Source,
    Data(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(Value),
    Neq(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Cmp(Ordering, bool, Value),
    Exists(bool),
    Prefix(String),
}

/// A value found at a path: `type` and `source` are text without a JSON
/// value to borrow.
#[derive(Debug, Clone, Copy)]
enum Found<'a> {
    Missing,
    Text(&'a str),
    Json(&'a Value),
}

impl Filter {
    pub fn parse(json: Value) -> Result<Self, FilterError> {
        let bytes = serde_json::to_vec(&json).map_or(usize::MAX, |b| b.len());
        if bytes > MAX_BYTES {
            return Err(error("", format!("{bytes} bytes of JSON; at most {MAX_BYTES}")));
        }
        let mut parser = Parser { conditions: 0 };
        let node = parser.filter(&json, "", 1)?;
        Ok(Self { node, json })
    }

    /// A filter as stored. One that no longer parses (edited by hand)
    /// passes nothing: a subscription that asked for some events must not
    /// get all of them.
    pub fn stored(json: Value, subscription: &str) -> Self {
        match Self::parse(json.clone()) {
            Ok(filter) => filter,
            Err(e) => {
                tracing::error!(subscription_id = subscription, at = %e.at, error = %e.message,
                    "the stored filter does not parse; nothing passes it");
                Self { node: Node::Any(Vec::new()), json }
            }
        }
    }

    /// The filter as it was written.
    pub fn as_json(&self) -> &Value {
        &self.json
    }

    pub fn matches(&self, content: &Content<'_>) -> bool {
        self.node.matches(content)
    }
}

fn error(at: &str, message: impl Into<String>) -> FilterError {
    FilterError { at: at.to_owned(), message: message.into() }
}

/// `/`-joined, escaped as RFC 6901 asks.
fn child(at: &str, key: &str) -> String {
    format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"))
}

struct Parser {
    conditions: usize,
}

impl Parser {
    fn filter(&mut self, json: &Value, at: &str, depth: usize) -> Result<Node, FilterError> {
        if depth > MAX_DEPTH {
            return Err(error(at, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let Value::Object(map) = json else {
            return Err(error(at, "a filter is a JSON object"));
        };
        if map.is_empty() {
            return Err(error(at, "an empty filter; leave the filter out to receive every event"));
        }
        let mut all = Vec::with_capacity(map.len());
        for (key, value) in map {
            let at = child(at, key);
            let node = match key.as_str() {
                "$and" | "$or" => {
                    let Value::Array(items) = value else {
                        return Err(error(&at, format!("{key} takes an array of filters")));
                    };
                    if items.is_empty() {
                        return Err(error(&at, format!("{key} takes at least one filter")));
                    }
                    let nodes = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| self.filter(item, &child(&at, &i.to_string()), depth + 1))
                        .collect::<Result<Vec<_>, _>>()?;
                    if key == "$and" {
                        Node::All(nodes)
                    } else {
                        Node::Any(nodes)
                    }
                }
                "$not" => Node::Not(Box::new(self.filter(value, &at, depth + 1)?)),
                operator if operator.starts_with('$') => {
                    return Err(error(
                        &at,
                        "not allowed here: a filter's keys are $and, $or, $not or paths (type, source, data.…)",
                    ))
                }
                path => Node::Field(field_path(path, &at)?, self.ops(value, &at)?),
            };
            all.push(node);
        }
        Ok(match all.len() {
            1 => all.remove(0),
            _ => Node::All(all),
        })
    }

    fn ops(&mut self, json: &Value, at: &str) -> Result<Vec<Op>, FilterError> {
        let operators = match json {
            Value::Object(map) if map.keys().any(|k| k.starts_with('$')) => map,
            // Any other value is what the field must equal.
            value => {
                self.count(at)?;
                return Ok(vec![Op::Eq(value.clone())]);
            }
        };
        let mut ops = Vec::with_capacity(operators.len());
        for (name, value) in operators {
            let at = child(at, name);
            self.count(&at)?;
            ops.push(operator(name, value, &at)?);
        }
        Ok(ops)
    }

    fn count(&mut self, at: &str) -> Result<(), FilterError> {
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(error(at, format!("more than {MAX_CONDITIONS} conditions in one filter")));
        }
        Ok(())
    }
}

fn field_path(path: &str, at: &str) -> Result<FieldPath, FilterError> {
    const EXPECTED: &str = "a path is type, source, data or data.<key>[.<key>…]";
    match path {
        "type" => return Ok(FieldPath::Type),
        "source" => return Ok(FieldPath::Source),
        "data" => return Ok(FieldPath::Data(Vec::new())),
        _ => {}
    }
    let Some(rest) = path.strip_prefix("data.") else {
        return Err(error(at, EXPECTED));
    };
    let segments: Vec<String> = rest.split('.').map(str::to_owned).collect();
    if segments.iter().any(String::is_empty) {
        return Err(error(at, format!("an empty key in the path; {EXPECTED}")));
    }
    if segments.len() > MAX_PATH_SEGMENTS {
        return Err(error(at, format!("more than {MAX_PATH_SEGMENTS} keys after data")));
    }
    Ok(FieldPath::Data(segments))
}

fn operator(name: &str, value: &Value, at: &str) -> Result<Op, FilterError> {
    let list = |value: &Value| match value {
        Value::Array(items) if items.len() <= MAX_LIST => Ok(items.clone()),
        Value::Array(_) => Err(error(at, format!("at most {MAX_LIST} values"))),
        _ => Err(error(at, format!("{name} takes an array of values"))),
    };
    let bound = |ordering: Ordering, or_equal: bool| match value {
        Value::Number(_) | Value::String(_) => Ok(Op::Cmp(ordering, or_equal, value.clone())),
        _ => Err(error(at, format!("{name} takes a number or a string"))),
    };
    match name {
        "$eq" => Ok(Op::Eq(value.clone())),
        "$neq" => Ok(Op::Neq(value.clone())),
        "$in" => list(value).map(Op::In),
        "$nin" => list(value).map(Op::Nin),
        "$gt" => bound(Ordering::Greater, false),
        "$gte" => bound(Ordering::Greater, true),
        "$lt" => bound(Ordering::Less, false),
        "$lte" => bound(Ordering::Less, true),
        "$exists" => match value {
            Value::Bool(b) => Ok(Op::Exists(*b)),
            _ => Err(error(at, "$exists takes true or false")),
        },
        "$prefix" => match value {
            Value::String(s) => Ok(Op::Prefix(s.clone())),
            _ => Err(error(at, "$prefix takes a string")),
        },
        _ if name.starts_with('$') => Err(error(
            at,
            "unknown operator; one of $eq $neq $in $nin $gt $gte $lt $lte $exists $prefix \
             (use $eq to compare with an object that has $ keys)",
        )),
        _ => Err(error(
            at,
            "operators and plain keys do not mix; to compare with an object, use {\"$eq\": …}",
        )),
    }
}

impl Node {
    fn matches(&self, content: &Content<'_>) -> bool {
        match self {
            Self::All(nodes) => nodes.iter().all(|n| n.matches(content)),
            Self::Any(nodes) => nodes.iter().any(|n| n.matches(content)),
            Self::Not(node) => !node.matches(content),
            Self::Field(path, ops) => {
                let found = path.find(content);
                ops.iter().all(|op| op.holds(found))
            }
        }
    }
}

impl FieldPath {
    fn find<'a>(&self, content: &Content<'a>) -> Found<'a> {
        match self {
            Self::Type => Found::Text(content.event_type),
            Self::Source => Found::Text(content.source),
            Self::Data(segments) => {
                let mut at = content.data;
                for segment in segments {
                    let next = match at {
                        Value::Object(map) => map.get(segment),
                        Value::Array(items) => {
                            segment.parse::<usize>().ok().and_then(|i| items.get(i))
                        }
                        _ => None,
                    };
                    match next {
                        Some(value) => at = value,
                        None => return Found::Missing,
                    }
                }
                Found::Json(at)
            }
        }
    }
}

impl Op {
    fn holds(&self, found: Found<'_>) -> bool {
        match self {
            Self::Exists(wanted) => !matches!(found, Found::Missing) == *wanted,
            // A missing field equals nothing, so it is outside every list.
            Self::Neq(value) => !equal(found, value),
            Self::Nin(values) => !values.iter().any(|v| equal(found, v)),
            Self::Eq(value) => equal(found, value),
            Self::In(values) => values.iter().any(|v| equal(found, v)),
            Self::Cmp(ordering, or_equal, bound) => {
                compare(found, bound).is_some_and(|o| o == *ordering || (*or_equal && o.is_eq()))
            }
            Self::Prefix(prefix) => found.text().is_some_and(|s| s.starts_with(prefix.as_str())),
        }
    }
}

impl<'a> Found<'a> {
    fn text(self) -> Option<&'a str> {
        match self {
            Self::Text(s) => Some(s),
            Self::Json(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

fn equal(found: Found<'_>, expected: &Value) -> bool {
    match (found, expected) {
        (Found::Missing, _) => false,
        (Found::Text(s), Value::String(e)) => s == e,
        (Found::Text(_), _) => false,
        (Found::Json(value), expected) => json_equal(value, expected),
    }
}

/// JSON equality where `1` and `1.0` are the same number.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => objects_equal(x, y),
        _ => a == b,
    }
}

fn objects_equal(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| json_equal(a, b)))
}

/// Numbers with numbers, strings with strings (by code point); other pairs
/// have no order.
fn compare(found: Found<'_>, bound: &Value) -> Option<Ordering> {
    match (found, bound) {
        (Found::Json(Value::Number(n)), Value::Number(b)) => number_cmp(n, b),
        (found, Value::String(b)) => Some(found.text()?.cmp(b.as_str())),
        _ => None,
    }
}

/// Exact for integers, IEEE 754 otherwise.
fn number_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn passes(filter: Value, data: &Value) -> bool {
        let filter = Filter::parse(filter).expect("a valid filter");
        filter.matches(&Content { event_type: "order.paid", source: "/shop/eu", data })
    }

    #[test]
    fn each_operator_against_present_missing_and_mistyped_fields() {
        let data = json!({"amount": 120, "price": 9.5, "currency": "EUR", "tags": ["a", "b"],
            "customer": {"tier": "gold", "since": "2024-03-01"}, "note": null});
        let table: &[(Value, bool)] = &[
            // Plain values are $eq; numbers compare as numbers.
            (json!({"data.amount": 120}), true),
            (json!({"data.amount": 120.0}), true),
            (json!({"data.amount": "120"}), false),
            (json!({"data.amount": {"$eq": 121}}), false),
            (json!({"data.customer": {"tier": "gold", "since": "2024-03-01"}}), true),
            (json!({"data.tags": ["a", "b"]}), true),
            (json!({"data.tags.1": "b"}), true),
            (json!({"data.tags.2": "c"}), false),
            (json!({"data.amount": {"$neq": 100}}), true),
            (json!({"data.amount": {"$neq": 120}}), false),
            (json!({"data.missing": {"$neq": 1}}), true),
            (json!({"data.currency": {"$in": ["USD", "EUR"]}}), true),
            (json!({"data.currency": {"$in": ["USD"]}}), false),
            (json!({"data.missing": {"$in": [null]}}), false),
            (json!({"data.currency": {"$nin": ["USD"]}}), true),
            (json!({"data.currency": {"$nin": ["EUR"]}}), false),
            (json!({"data.missing": {"$nin": ["EUR"]}}), true),
            (json!({"data.amount": {"$gt": 100, "$lte": 120}}), true),
            (json!({"data.amount": {"$gt": 120}}), false),
            (json!({"data.amount": {"$gte": 120}}), true),
            (json!({"data.price": {"$lt": 10}}), true),
            (json!({"data.price": {"$lt": 9.5}}), false),
            (json!({"data.customer.since": {"$gte": "2024-01-01"}}), true),
            (json!({"data.customer.since": {"$lt": "2024-01-01"}}), false),
            // A string is not above a number, nor a number below a string.
            (json!({"data.currency": {"$gt": 1}}), false),
            (json!({"data.amount": {"$lt": "z"}}), false),
            (json!({"data.missing": {"$lt": 5}}), false),
            (json!({"data.note": {"$exists": true}}), true),
            (json!({"data.note": null}), true),
            (json!({"data.missing": {"$exists": false}}), true),
            (json!({"data.customer.tier.deeper": {"$exists": true}}), false),
            (json!({"data.customer.tier": {"$prefix": "go"}}), true),
            (json!({"data.amount": {"$prefix": "1"}}), false),
            (json!({"type": {"$prefix": "order."}}), true),
            (json!({"type": "order.created"}), false),
            (json!({"source": {"$in": ["/shop/eu", "/shop/us"]}}), true),
            (json!({"data": {"$exists": true}}), true),
        ];
        for (filter, expected) in table {
            assert_eq!(passes(filter.clone(), &data), *expected, "{filter}");
        }
    }

    #[test]
    fn and_or_not_nest() {
        let data = json!({"amount": 50, "vip": true});
        let table: &[(Value, bool)] = &[
            (json!({"data.amount": {"$gt": 10}, "data.vip": false}), false),
            (json!({"$and": [{"data.amount": {"$gt": 10}}, {"data.vip": true}]}), true),
            (json!({"$or": [{"data.amount": {"$gt": 100}}, {"data.vip": true}]}), true),
            (json!({"$or": [{"data.amount": {"$gt": 100}}, {"data.vip": false}]}), false),
            (json!({"$not": {"data.vip": true}}), false),
            (json!({"$not": {"$or": [{"type": "a.b"}, {"data.amount": 50}]}}), false),
            (
                json!({"$or": [{"$and": [{"data.amount": 50}, {"$not": {"data.vip": false}}]}]}),
                true,
            ),
        ];
        for (filter, expected) in table {
            assert_eq!(passes(filter.clone(), &data), *expected, "{filter}");
        }
    }

    #[test]
    fn a_bad_filter_names_where_it_is_wrong() {
        let deep = (0..MAX_DEPTH).fold(json!({"data.a": 1}), |f, _| json!({ "$not": f }));
        let many: Map<String, Value> =
            (0..=MAX_CONDITIONS).map(|i| (format!("data.k{i}"), json!(i))).collect();
        let table: &[(Value, &str)] = &[
            (json!([1]), ""),
            (json!({}), ""),
            (json!({"amount": 1}), "/amount"),
            (json!({"data..a": 1}), "/data..a"),
            (json!({"data.a": {"$gt": true}}), "/data.a/$gt"),
            (json!({"data.a": {"$in": 1}}), "/data.a/$in"),
            (json!({"data.a": {"$exists": "yes"}}), "/data.a/$exists"),
            (json!({"data.a": {"$prefix": 1}}), "/data.a/$prefix"),
            (json!({"data.a": {"$regex": "x"}}), "/data.a/$regex"),
            (json!({"data.a": {"$eq": 1, "b": 2}}), "/data.a/b"),
            (json!({"$or": []}), "/$or"),
            (json!({"$or": [{"data.a": 1}, {"data/x": 1}]}), "/$or/1/data~1x"),
            (json!({"$nor": [{"data.a": 1}]}), "/$nor"),
            (json!({"$not": [{"data.a": 1}]}), "/$not"),
            (deep, "/$not/$not/$not/$not/$not"),
            (json!({"data.a": {"$in": vec![0; MAX_LIST + 1]}}), "/data.a/$in"),
            (json!({"data.a": "x".repeat(MAX_BYTES)}), ""),
        ];
        for (filter, at) in table {
            let refused = Filter::parse(filter.clone()).expect_err("refused");
            assert_eq!(refused.at, *at, "{filter}: {}", refused.message);
            assert!(!refused.message.is_empty());
        }
        let refused = Filter::parse(Value::Object(many)).expect_err("too many conditions");
        assert!(refused.at.starts_with("/data.k"), "{refused:?}");
        assert!(refused.message.contains(&MAX_CONDITIONS.to_string()), "{refused:?}");
        let deepest = (1..MAX_DEPTH).fold(json!({"data.a": 1}), |f, _| json!({ "$not": f }));
        assert!(Filter::parse(deepest).is_ok(), "{MAX_DEPTH} levels are allowed");
    }

    #[test]
    fn a_stored_filter_that_no_longer_parses_passes_nothing() {
        let broken = Filter::stored(json!({"data.a": {"$regex": "x"}}), "sub_x");
        let content = Content { event_type: "a.b", source: "s", data: &json!({"a": "x"}) };
        assert!(!broken.matches(&content));
        assert_eq!(broken.as_json(), &json!({"data.a": {"$regex": "x"}}));
    }

    #[test]
    fn a_filter_shows_as_written() {
        let written = json!({"data.amount": {"$gte": 100}, "type": "order.paid"});
        assert_eq!(Filter::parse(written.clone()).expect("valid").as_json(), &written);
    }
}
