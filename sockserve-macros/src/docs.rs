//! Keeps the key tables of the documentation in sync with [`KEYS`].
//!
//! The README's DSL section and the `server` macro docs (`server.md`) each hold
//! the table rendered by [`key_table`] between `<!-- keys:start -->` and
//! `<!-- keys:end -->`. The tests fail when either is stale; run them with
//! `SOCKSERVE_BLESS=1` to rewrite both tables in place.

use crate::table::{Scope, ValueKind, KEYS};
use std::path::{Path, PathBuf};

const START: &str = "<!-- keys:start -->\n";
const END: &str = "<!-- keys:end -->";

/// The Markdown table of every key.
pub(crate) fn key_table() -> String {
    let mut out = String::from(
        "| Key | Value | Transports | Concurrency | Default | Python | What it does |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for key in KEYS {
        let value = match key.kind {
            ValueKind::Bool => "`true` / `false`".to_string(),
            ValueKind::Duration { positive: true, .. } => "duration > 0".to_string(),
            ValueKind::Duration { .. } => "duration".to_string(),
            ValueKind::Int { min: 0, .. } => "integer ≥ 0".to_string(),
            ValueKind::Int { min, .. } => format!("integer ≥ {min}"),
            ValueKind::Mode => "octal mode ≤ `0o777`".to_string(),
            ValueKind::TypeName => "string: a type name".to_string(),
            ValueKind::CratePath => "string: a path".to_string(),
            ValueKind::TransportType => "a type path".to_string(),
            ValueKind::Proxy => "`\"v1\"` / `\"v2\"` / `\"any\"`".to_string(),
        };
        let default = if key.default.starts_with("none") || key.default.contains('`') {
            key.default.to_string()
        } else {
            format!("`{}`", key.default)
        };
        let value = match key.kind {
            ValueKind::Bool => value,
            _ => format!("{value}, e.g. `{}`", key.example),
        };
        out.push_str(&format!(
            "| `{}` | {value} | {} | {} | {default} | {} | {} |\n",
            key.name,
            scope(key.transports),
            scope(key.concurrency),
            key.python,
            key.doc,
        ));
    }
    out
}

fn scope(scope: Scope) -> String {
    match scope {
        Scope::All => "all".to_string(),
        Scope::Only(names) => names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The text between the key markers of `file`, and the file with that text
/// replaced by the current table.
fn check(file: &Path) -> (String, String) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let start = text
        .find(START)
        .unwrap_or_else(|| panic!("{}: no `{}` marker", file.display(), START.trim()))
        + START.len();
    let end = start
        + text[start..]
            .find(END)
            .unwrap_or_else(|| panic!("{}: no `{END}` marker", file.display()));
    let updated = format!("{}{}{}", &text[..start], key_table(), &text[end..]);
    (text[start..end].to_string(), updated)
}

fn assert_in_sync(file: PathBuf) {
    let (found, updated) = check(&file);
    if found == key_table() {
        return;
    }
    if std::env::var_os("SOCKSERVE_BLESS").is_some() {
        std::fs::write(&file, updated).unwrap();
        return;
    }
    panic!(
        "the key table in {} is stale; rerun with SOCKSERVE_BLESS=1 or paste:\n{}",
        file.display(),
        key_table()
    );
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn server_docs_table_is_current() {
    assert_in_sync(manifest_dir().join("src/server.md"));
}

#[test]
fn readme_table_is_current() {
    assert_in_sync(manifest_dir().join("../README.md"));
}

#[test]
fn every_key_is_documented() {
    let table = key_table();
    for key in KEYS {
        assert!(table.contains(&format!("| `{}` |", key.name)));
        assert!(!key.doc.is_empty() && !key.python.is_empty());
    }
}

#[test]
fn server_docs_example_is_the_compiled_one() {
    let docs = std::fs::read_to_string(manifest_dir().join("src/server.md")).unwrap();
    let start = docs.find("```ignore\n").expect("an example") + "```ignore\n".len();
    let end = start + docs[start..].find("```\n").unwrap();
    let compiled = manifest_dir().join("../tests/ui/pass/doc_example.rs");
    let compiled = std::fs::read_to_string(&compiled).unwrap();
    assert_eq!(
        &docs[start..end],
        compiled,
        "the first example of server.md must equal tests/ui/pass/doc_example.rs"
    );
}
