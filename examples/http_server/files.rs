//! Mapping a request path to the served directory, safely, and rendering directory listings.
//!
//! The root is canonicalized once at start. A request path (already split into decoded
//! segments by [`parse::parse_target`](super::parse::parse_target), which refuses `..`, encoded
//! `/`, backslashes and NUL) is joined to the root and canonicalized again: symlinks are
//! resolved, and a result outside the root (a symlink pointing out) is refused. Only regular
//! files and directories are served.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::parse::{percent_encode, UrlPath};

/// What a request path maps to.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A regular file inside the root (for a directory: its `index.html`).
    File(PathBuf),
    /// A directory inside the root without an `index.html`: list it.
    Directory(PathBuf),
    /// A directory asked for without its trailing slash: redirect to this path.
    Redirect(String),
    NotFound,
    /// Outside the root, unreadable, or not a regular file or directory.
    Forbidden,
}

/// Whether a file name is hidden: it starts with a dot (`.git`, `.env`).
pub fn is_hidden(name: &[u8]) -> bool {
    name.first() == Some(&b'.')
}

/// Resolves `path` under `root`, which must be canonical. Unless `show_hidden`, a path with a
/// hidden component, as asked or once symlinks are resolved (`link -> .git`), is not found.
pub fn resolve(root: &Path, path: &UrlPath, show_hidden: bool) -> Resolved {
    if !show_hidden && path.segments.iter().any(|s| is_hidden(s)) {
        return Resolved::NotFound;
    }
    let mut candidate = root.to_path_buf();
    for segment in &path.segments {
        candidate.push(OsStr::from_bytes(segment));
    }
    let real = match fs::canonicalize(&candidate) {
        Ok(real) => real,
        Err(e) => return from_error(&e),
    };
    let Ok(inside) = real.strip_prefix(root) else {
        log::warn!(
            "refusing {}: resolves outside the served directory",
            candidate.display()
        );
        return Resolved::Forbidden;
    };
    if !show_hidden && inside.iter().any(|c| is_hidden(c.as_bytes())) {
        return Resolved::NotFound;
    }
    let metadata = match fs::metadata(&real) {
        Ok(metadata) => metadata,
        Err(e) => return from_error(&e),
    };
    if metadata.is_dir() {
        if !path.trailing_slash {
            return Resolved::Redirect(path.encoded() + "/");
        }
        if let Ok(index) = fs::canonicalize(real.join("index.html")) {
            if index.starts_with(root) && index.is_file() {
                return Resolved::File(index);
            }
        }
        return Resolved::Directory(real);
    }
    if !metadata.is_file() {
        return Resolved::Forbidden;
    }
    if path.trailing_slash {
        // A file named as if it were a directory.
        return Resolved::NotFound;
    }
    Resolved::File(real)
}

fn from_error(e: &io::Error) -> Resolved {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Resolved::Forbidden,
        _ => Resolved::NotFound,
    }
}

/// Escapes text for HTML content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

/// Renders the listing of `dir`, shown as `path` (as `python -m http.server` does): links
/// percent-encoded, names HTML-escaped, directories with a trailing `/`, symlinks with `@`;
/// hidden entries only with `show_hidden`.
pub fn listing(dir: &Path, path: &UrlPath, show_hidden: bool) -> io::Result<String> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !show_hidden && is_hidden(name.as_bytes()) {
            continue;
        }
        let file_type = entry.file_type()?;
        // A symlink to a directory is listed as a directory (its target decides).
        let is_dir = file_type.is_dir()
            || (file_type.is_symlink() && entry.path().metadata().is_ok_and(|m| m.is_dir()));
        entries.push((name, is_dir, file_type.is_symlink()));
    }
    entries.sort_by_key(|(name, ..)| name.to_string_lossy().to_lowercase());

    let shown: Vec<String> = path
        .segments
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let shown = if shown.is_empty() {
        "/".to_string()
    } else {
        format!("/{}/", shown.join("/"))
    };
    let title = format!("Directory listing for {}", html_escape(&shown));
    let mut html = format!(
        "<!DOCTYPE HTML>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n<hr>\n<ul>\n"
    );
    for (name, is_dir, is_symlink) in entries {
        let mut href = percent_encode(name.as_bytes());
        let mut text = name.to_string_lossy().into_owned();
        if is_dir {
            href.push('/');
            text.push('/');
        } else if is_symlink {
            text.push('@');
        }
        html.push_str(&format!(
            "<li><a href=\"{}\">{}</a></li>\n",
            html_escape(&href),
            html_escape(&text)
        ));
    }
    html.push_str("</ul>\n<hr>\n</body>\n</html>\n");
    Ok(html)
}

/// The Content-Type for a file, by its extension.
pub fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "text" | "log" | "rs" | "py" | "toml" | "sh" | "c" | "h" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "xml" => "application/xml",
        "csv" => "text/csv; charset=utf-8",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "ico" => "image/vnd.microsoft.icon",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}
