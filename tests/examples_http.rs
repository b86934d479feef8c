//! Black-box tests of the `http_server` example: `curl` as a user would run it, and raw
//! sockets for what curl will not send (malformed requests, traversal attempts, oversized
//! heads).

mod examples_support;

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::thread;
use std::time::Duration;

use examples_support::*;

/// A served tree, with a secret next to it that must never be served.
struct Site {
    dir: TempDir,
    /// 200 KB of pseudo-random bytes, served as `data.bin`.
    data: Vec<u8>,
}

const SECRET: &str = "TOP SECRET: must not be served";

impl Site {
    fn new(tag: &str) -> Site {
        let dir = TempDir::new(tag);
        std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
        let root = dir.join("root");
        let write = |name: &str, content: &[u8]| {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        };
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let data: Vec<u8> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        write("hello.txt", b"hello\n");
        write("page.html", b"<h1>page</h1>\n");
        write("image.png", b"\x89PNG\r\n\x1a\n");
        write("noext", b"raw");
        write("data.bin", &data);
        write("a&b <c>.txt", b"escaped\n");
        write("sp ace#?.txt", b"spaced\n");
        write("caf\u{e9}.txt", b"unicode\n");
        write("sub/inner.txt", b"inner\n");
        write("site/index.html", b"<p>index</p>\n");
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::os::unix::fs::symlink("hello.txt", root.join("inside_link")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", root.join("escape_link")).unwrap();
        std::os::unix::fs::symlink("..", root.join("escape_dir")).unwrap();
        let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        Site { dir, data }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.join("root")
    }

    fn serve(&self, extra: &[&str]) -> Server {
        let root = self.root();
        let mut args = vec!["--bind", "127.0.0.1:0", "--directory", root.to_str().unwrap()];
        args.extend_from_slice(extra);
        Server::start("http_server", &args)
    }
}

/// A response read off a raw connection.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` as is, reads the whole response (the server closes after it).
fn raw(addr: &str, request: &[u8]) -> Reply {
    let mut client = tcp_client(addr);
    // A server refusing an oversized head may stop reading: a failed write is no failure here.
    let _ = client.stream().write_all(request);
    let response = client.read_to_end();
    parse_reply(&response)
}

fn parse_reply(response: &[u8]) -> Reply {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(response)));
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    Reply {
        status,
        head,
        body: response[split + 4..].to_vec(),
    }
}

fn get(addr: &str, target: &str) -> Reply {
    raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

/// Runs curl with a time limit.
fn curl(args: &[&str]) -> std::process::Output {
    let mut all = vec!["-sS", "--max-time", "10"];
    all.extend_from_slice(args);
    run_tool("curl", &all, b"", IO_TIMEOUT)
}

/// `curl -i`: the response, head and body, parsed.
fn curl_reply(args: &[&str]) -> Reply {
    let mut all = vec!["-i"];
    all.extend_from_slice(args);
    let out = curl(&all);
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_reply(&out.stdout)
}

#[test]
fn http_serves_files_with_length_and_type() {
    let site = Site::new("http-files");
    let server = site.serve(&[]);
    let base = format!("http://{}", server.addr);
    for (name, body, content_type) in [
        ("hello.txt", &b"hello\n"[..], "text/plain; charset=utf-8"),
        ("page.html", b"<h1>page</h1>\n", "text/html; charset=utf-8"),
        ("image.png", b"\x89PNG\r\n\x1a\n", "image/png"),
        ("noext", b"raw", "application/octet-stream"),
        // A symlink inside the root is served, typed by its target's name.
        ("inside_link", b"hello\n", "text/plain; charset=utf-8"),
    ] {
        let reply = curl_reply(&[&format!("{base}/{name}")]);
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(reply.body, body, "{name}");
        assert_eq!(
            reply.header("content-length"),
            Some(body.len().to_string()),
            "{name}"
        );
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some(content_type),
            "{name}"
        );
        assert_eq!(reply.header("connection").as_deref(), Some("close"));
        assert!(reply.header("date").is_some_and(|d| d.ends_with(" GMT")));
        assert!(reply.header("last-modified").is_some());
    }
    // A binary file arrives intact.
    let out = site.dir.join("download.bin");
    let status = curl(&["-o", out.to_str().unwrap(), &format!("{base}/data.bin")]);
    assert!(status.status.success());
    assert_eq!(std::fs::read(out).unwrap(), site.data);
    // Percent-encoded and non-ASCII names.
    let reply = curl_reply(&[&format!("{base}/sp%20ace%23%3F.txt")]);
    assert_eq!(reply.body, b"spaced\n");
    let reply = curl_reply(&[&format!("{base}/caf%C3%A9.txt")]);
    assert_eq!(reply.body, b"unicode\n");
    // HTTP/1.0, no Host needed; a query string is ignored.
    let reply = raw(&server.addr, b"GET /hello.txt?x=1 HTTP/1.0\r\n\r\n");
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello\n"[..]));
    assert_no_panic(&server);
}

#[test]
fn http_head_has_the_headers_and_no_body() {
    let site = Site::new("http-head");
    let server = site.serve(&[]);
    let out = curl(&["-I", &format!("http://{}/data.bin", server.addr)]);
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Length: 200000"), "{head}");
    let reply = raw(&server.addr, b"HEAD /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length").as_deref(), Some("6"));
    assert!(reply.body.is_empty(), "HEAD has no body");
    let reply = raw(&server.addr, b"HEAD /missing HTTP/1.0\r\n\r\n");
    assert_eq!(reply.status, 404);
    assert!(reply.body.is_empty());
}

#[test]
fn http_lists_directories_escaped_and_follows_indexes() {
    let site = Site::new("http-dirs");
    let server = site.serve(&[]);
    let base = format!("http://{}", server.addr);
    let listing = curl_reply(&[&format!("{base}/")]);
    assert_eq!(listing.status, 200);
    assert_eq!(
        listing.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        listing.header("content-length"),
        Some(listing.body.len().to_string())
    );
    let html = listing.body_text();
    assert!(html.contains("Directory listing for /"), "{html}");
    for expected in [
        r#"<a href="a%26b%20%3Cc%3E.txt">a&amp;b &lt;c&gt;.txt</a>"#,
        r#"<a href="sp%20ace%23%3F.txt">sp ace#?.txt</a>"#,
        r#"<a href="caf%C3%A9.txt">café.txt</a>"#,
        r#"<a href="sub/">sub/</a>"#,
        r#"<a href="inside_link">inside_link@</a>"#,
    ] {
        assert!(html.contains(expected), "{expected} missing from {html}");
    }
    assert!(!html.contains("<c>"), "names are escaped");
    // Every link of the listing works, as a browser would follow it.
    let reply = curl_reply(&[&format!("{base}/a%26b%20%3Cc%3E.txt")]);
    assert_eq!(reply.body, b"escaped\n");

    // A directory without its slash: redirected; with it: listed, or its index.html.
    let reply = curl_reply(&[&format!("{base}/sub")]);
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location").as_deref(), Some("/sub/"));
    let reply = curl_reply(&[&format!("{base}/sub/")]);
    assert!(reply.body_text().contains(r#"<a href="inner.txt">inner.txt</a>"#));
    assert!(reply.body_text().contains("Directory listing for /sub/"));
    let out = curl(&["-L", &format!("{base}/site")]);
    assert_eq!(out.stdout, b"<p>index</p>\n", "curl -L follows to the index");
    let reply = get(&server.addr, "//sub");
    assert_eq!(
        reply.header("location").as_deref(),
        Some("/sub/"),
        "never a protocol-relative redirect"
    );
    let reply = curl_reply(&[&format!("{base}/empty/")]);
    assert_eq!(reply.status, 200);
    assert!(!reply.body_text().contains("<li>"));
}

#[test]
fn http_answers_404_for_what_does_not_exist() {
    let site = Site::new("http-404");
    let server = site.serve(&[]);
    for target in ["/missing", "/hello.txt/", "/sub/missing/x", "/sub/inner.txt/"] {
        let reply = get(&server.addr, target);
        assert_eq!(reply.status, 404, "{target}");
        assert_eq!(reply.header("content-length"), Some(reply.body.len().to_string()));
    }
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/nothing.here", server.addr),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

#[test]
fn http_never_serves_outside_the_root() {
    let site = Site::new("http-traversal");
    let server = site.serve(&[]);
    for target in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..\\secret.txt",
        "/..%5csecret.txt",
        "/hello.txt%00",
        "/%00",
        "/escape_link",
        "/escape_dir/secret.txt",
        "/escape_dir/",
        "/fifo",
        "http://test/../secret.txt",
    ] {
        let reply = get(&server.addr, target);
        assert!(
            reply.status == 403 || reply.status == 404,
            "{target}: {}",
            reply.status
        );
        assert!(!reply.body_text().contains("TOP SECRET"), "{target}");
    }
    // curl normalizes `..` unless told not to.
    let out = curl(&["--path-as-is", &format!("http://{}/../secret.txt", server.addr)]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("TOP SECRET"));
    let reply = get(&server.addr, "/escape_link");
    assert_eq!(reply.status, 403, "a symlink out of the root is refused");
    server_alive_and_clean(server);
}

/// Dot-files (`.git/`, `.env`) are neither served nor listed unless `--show-hidden`, also
/// through a symlink into a hidden directory.
#[test]
fn http_hides_dot_files_unless_asked() {
    let site = Site::new("http-hidden");
    let root = site.root();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/config"), "[core]\n").unwrap();
    std::fs::write(root.join(".env"), "PASSWORD=hunter2\n").unwrap();
    std::os::unix::fs::symlink(".git", root.join("git_link")).unwrap();
    let server = site.serve(&[]);
    let addr = server.addr.clone();
    for target in [
        "/.env",
        "/.git/config",
        "/.git/",
        "/%2egit/config",
        "/git_link/config",
        "/sub/../.env",
    ] {
        let reply = get(&addr, target);
        assert!(
            reply.status == 404 || reply.status == 403,
            "{target}: {} {}",
            reply.status,
            reply.body_text()
        );
        assert!(!reply.body_text().contains("hunter2") && !reply.body_text().contains("[core]"));
    }
    let listing = get(&addr, "/").body_text();
    assert!(listing.contains("hello.txt"), "{listing}");
    assert!(
        !listing.contains(".env") && !listing.contains(".git"),
        "{listing}"
    );
    drop(server);

    let server = site.serve(&["--show-hidden"]);
    let addr = server.addr.clone();
    let reply = get(&addr, "/.env");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body_text(), "PASSWORD=hunter2\n");
    assert_eq!(get(&addr, "/git_link/config").body_text(), "[core]\n");
    assert!(get(&addr, "/").body_text().contains(".env"));
}

fn server_alive_and_clean(mut server: Server) {
    let reply = get(&server.addr, "/hello.txt");
    assert_eq!(reply.status, 200);
    server.assert_alive();
    assert_no_panic(&server);
}

#[test]
fn http_rejects_malformed_and_unsupported_requests() {
    let site = Site::new("http-bad");
    let server = site.serve(&[]);
    let addr = server.addr.clone();
    let status = |request: &[u8]| raw(&addr, request).status;
    assert_eq!(status(b"garbage\r\n\r\n"), 400);
    assert_eq!(status(b"\x00\xff\xfe\r\n\r\n"), 400);
    assert_eq!(status(b"GET /\r\n\r\n"), 400, "HTTP/0.9 style");
    assert_eq!(status(b"GET /%zz HTTP/1.0\r\n\r\n"), 400);
    assert_eq!(status(b"GET /a%2 HTTP/1.0\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400, "HTTP/1.1 needs Host");
    assert_eq!(status(b"GET / HTTP/1.0\r\n\r\n"), 200);
    assert_eq!(status(b"GET / HTTP/1.0\r\nX: a\r\n folded\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.0\r\nNo colon\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 505);

    let reply = raw(&addr, b"BREW /pot HTTP/1.0\r\n\r\n");
    assert_eq!(reply.status, 501);
    assert_eq!(reply.header("allow").as_deref(), Some("GET, HEAD"));
    // curl POSTing a body: 501, and the unread body does not reset the connection.
    let body = site.dir.join("body.bin");
    std::fs::write(&body, &site.data).unwrap();
    let reply = curl_reply(&[
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("http://{addr}/"),
    ]);
    assert_eq!(reply.status, 501);
    let reply = curl_reply(&["-X", "DELETE", &format!("http://{addr}/hello.txt")]);
    assert_eq!(reply.status, 501);
    assert!(site.root().join("hello.txt").exists());

    // Oversized heads: bounded reads, 414 and 431.
    let long_target = format!("GET /{} HTTP/1.0\r\n\r\n", "a".repeat(10_000));
    assert_eq!(status(long_target.as_bytes()), 414);
    let big_header = format!("GET / HTTP/1.0\r\nX-Big: {}\r\n\r\n", "v".repeat(10_000));
    assert_eq!(status(big_header.as_bytes()), 431);
    let mut many = String::from("GET / HTTP/1.0\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(status(many.as_bytes()), 431);
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("X-Huge: {}", "h".repeat(70_000)),
        &format!("http://{addr}/"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "431");

    // Early disconnects: before anything, mid-line, mid-headers.
    drop(tcp_client(&addr));
    for partial in [&b"GET /hel"[..], b"GET / HTTP/1.0\r\nHost: x"] {
        let mut client = tcp_client(&addr);
        client.send(partial);
        drop(client);
    }
    let mut half_closed = tcp_client(&addr);
    half_closed.send(b"GET / HTTP/1.0\r\n");
    half_closed.stream().shutdown(Shutdown::Write).unwrap();
    let rest = half_closed.read_to_end();
    assert!(rest.starts_with(b"HTTP/1.1 400"), "incomplete head: 400");
    server_alive_and_clean(server);
}

#[test]
fn http_serves_concurrent_clients() {
    let site = Site::new("http-concurrent");
    let server = site.serve(&[]);
    let addr = server.addr.clone();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            thread::spawn(move || get(&addr, "/data.bin").body.len())
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), 200_000);
    }
}

#[test]
fn http_serves_the_current_directory_by_default() {
    let site = Site::new("http-cwd");
    let root = site.root();
    let server = Server::start_in("http_server", &["--bind", "127.0.0.1:0"], Some(&root));
    let reply = get(&server.addr, "/hello.txt");
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello\n"[..]));

    let mut bad = Server::spawn(
        "http_server",
        &["--directory", "/no/such/directory"],
        Some(Path::new("/")),
    );
    let status = bad.wait_exit(STARTUP).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(bad.stderr().contains("/no/such/directory"));
}

#[test]
fn http_sigterm_finishes_the_response_in_flight() {
    let site = Site::new("http-stop");
    let mut server = site.serve(&["--delay", "700"]);
    let mut client = TcpStream::connect(&server.addr).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.write_all(b"GET /data.bin HTTP/1.0\r\n\r\n").unwrap();
    thread::sleep(Duration::from_millis(200));
    server.stop_with(libc::SIGTERM);
    let mut response = Vec::new();
    client.read_to_end(&mut response).unwrap();
    let reply = parse_reply(&response);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, site.data);
}

#[test]
fn http_sigint_with_an_idle_connection_exits_promptly() {
    let site = Site::new("http-idle");
    let mut server = site.serve(&[]);
    let mut idle = tcp_client(&server.addr);
    let mut partial = tcp_client(&server.addr);
    partial.send(b"GET / HT");
    thread::sleep(Duration::from_millis(100));
    server.stop_with(libc::SIGINT);
    assert!(idle.read_to_end().is_empty(), "no request, no response");
    partial.read_to_end();
}
