//! Imports follow the data flow: the API and the dispatcher meet in the
//! modules both use (`delivery`, `health`, `store`, `kafka`, `domain`),
//! never in each other, and the bottom layers import neither. The source is
//! read as text, so a new file is checked without being listed here.

use std::path::{Path, PathBuf};

/// Where a part of `src/` lives, and the top-level modules it must not name.
const RULES: &[(&str, &[&str])] = &[
    // The portal calls the API: it sits above it.
    ("api", &["dispatcher", "portal"]),
    ("portal", &["dispatcher"]),
    ("dispatcher", &["api", "portal"]),
    ("delivery", &["api", "dispatcher", "portal"]),
    ("domain", &["api", "dispatcher", "delivery", "store", "kafka", "portal"]),
    ("health.rs", &["api", "dispatcher"]),
    ("error.rs", &["api", "dispatcher"]),
    ("metrics.rs", &["api", "dispatcher"]),
    ("ops.rs", &["api"]),
    ("server.rs", &["api", "dispatcher"]),
];

#[test]
fn no_module_imports_against_the_data_flow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offending = Vec::new();
    for (part, forbidden) in RULES {
        for file in rust_files(&src.join(part)) {
            let text = std::fs::read_to_string(&file).expect("a readable source file");
            for (line, module) in forbidden_paths(&text, forbidden) {
                let shown = file.strip_prefix(&src).unwrap_or(&file).display();
                let source = text.lines().nth(line - 1).unwrap_or_default().trim();
                offending.push(format!("src/{shown}:{line}: names crate::{module}: {source}"));
            }
        }
    }
    assert!(offending.is_empty(), "imports against the data flow:\n{}", offending.join("\n"));
}

#[test]
fn the_scan_finds_paths_in_every_form_and_skips_comments_and_literals() {
    let text = r##"use crate::dispatcher::cache::Target;
use crate::{config, dispatcher::egress};
use crate::{
    dispatcher,
};
let x = crate :: dispatcher::run();
// crate::dispatcher in a comment
/// crate::dispatcher in a doc comment
/* crate::dispatcher
   in a block comment */
use crate::dispatchers_elsewhere::X;
let s = "crate::dispatcher in a \"string\"";
let q = '"'; let e = '\''; fn f<'a>(_: &'a str) {}
let r = r#"crate::dispatcher in a "raw" string"#;
use hookgate::dispatcher::webhook;
use crate::{api::{dispatcher}, kafka};
"##;
    let found: Vec<usize> =
        forbidden_paths(text, &["dispatcher"]).into_iter().map(|(line, _)| line).collect();
    assert_eq!(found, [1, 2, 4, 6, 15]);
}

/// `path` itself when it is a file, else every `.rs` file under it.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The lines (1-based) where code names one of `modules` at the crate's
/// root: `crate::m`, `hookgate::m`, or `m` inside a `crate::{…}` group.
fn forbidden_paths(text: &str, modules: &[&str]) -> Vec<(usize, String)> {
    let code = without_comments_and_strings(text);
    let tokens = tokens(&code);
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let root = matches!(tokens[i].1.as_str(), "crate" | "hookgate");
        if root && tokens.get(i + 1).is_some_and(|t| t.1 == "::") {
            match tokens.get(i + 2) {
                Some((line, name)) if modules.contains(&name.as_str()) => {
                    found.push((*line, name.clone()));
                }
                // A group: its top-level names are the crate's modules.
                Some((_, brace)) if brace == "{" => {
                    let mut depth = 0;
                    let mut expect_name = true;
                    for (line, token) in &tokens[i + 2..] {
                        match token.as_str() {
                            "{" => depth += 1,
                            "}" => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            "," if depth == 1 => expect_name = true,
                            name if depth == 1 && expect_name => {
                                if modules.contains(&name) {
                                    found.push((*line, name.to_owned()));
                                }
                                expect_name = false;
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    found.sort();
    found.dedup();
    found
}

/// Identifiers, `::` and single punctuation, each with its line.
fn tokens(code: &str) -> Vec<(usize, String)> {
    let mut tokens = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut chars = line.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            if c.is_alphanumeric() || c == '_' {
                let mut end = start + c.len_utf8();
                while let Some(&(i, next)) = chars.peek() {
                    if !(next.is_alphanumeric() || next == '_') {
                        break;
                    }
                    end = i + next.len_utf8();
                    chars.next();
                }
                tokens.push((n + 1, line[start..end].to_owned()));
            } else if c == ':' && chars.peek().is_some_and(|&(_, next)| next == ':') {
                chars.next();
                tokens.push((n + 1, "::".to_owned()));
            } else if !c.is_whitespace() {
                tokens.push((n + 1, c.to_string()));
            }
        }
    }
    tokens
}

/// The text with comments, string and character literals blanked out
/// (newlines kept, so that line numbers hold).
fn without_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut out = String::with_capacity(text.len());
    // Skips to the end of a literal or comment, keeping its newlines.
    let skip = |out: &mut String, from: usize, to: usize| {
        out.extend(chars[from..to.min(chars.len())].iter().filter(|c| **c == '\n'));
        to
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let after_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && at(i + 1) == Some('/') {
            let end = (i..chars.len()).find(|&j| chars[j] == '\n').unwrap_or(chars.len());
            i = skip(&mut out, i, end);
        } else if c == '/' && at(i + 1) == Some('*') {
            let (mut j, mut depth) = (i + 2, 1);
            while j < chars.len() && depth > 0 {
                match (chars[j], at(j + 1)) {
                    ('*', Some('/')) => (depth, j) = (depth - 1, j + 2),
                    ('/', Some('*')) => (depth, j) = (depth + 1, j + 2),
                    _ => j += 1,
                }
            }
            i = skip(&mut out, i, j);
        } else if c == 'r' && !after_ident && matches!(at(i + 1), Some('#' | '"')) {
            let hashes = (i + 1..chars.len()).take_while(|&j| chars[j] == '#').count();
            if at(i + 1 + hashes) != Some('"') {
                out.push(c);
                i += 1;
                continue;
            }
            let closing: Vec<char> =
                std::iter::once('"').chain("#".repeat(hashes).chars()).collect();
            let body = i + 2 + hashes;
            let end = (body..chars.len())
                .find(|&j| chars[j..].starts_with(&closing))
                .map_or(chars.len(), |j| j + closing.len());
            i = skip(&mut out, i, end);
            out.push_str("\"\"");
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            i = skip(&mut out, i, j + 1);
            out.push_str("\"\"");
        } else if c == '\'' && at(i + 1) == Some('\\') {
            // An escaped character literal: `'\n'`, `'\''`, `'\u{1F600}'`.
            let end =
                (i + 3..chars.len()).find(|&j| chars[j] == '\'').map_or(chars.len(), |j| j + 1);
            i = skip(&mut out, i, end);
        } else if c == '\'' && at(i + 2) == Some('\'') {
            i += 3;
        } else {
            // A lifetime's quote, or code.
            out.push(c);
            i += 1;
        }
    }
    out
}
