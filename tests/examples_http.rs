//! Black-box tests of the `http_server` example: `curl` as a user would run it, and raw
//! sockets for what curl will not send (malformed requests, traversal attempts, oversized
//! heads, pipelined requests). Most run once per mode ([`MODES`]): the threading server (one
//! request per connection) and `--pooled` (keep-alive).

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

/// Sends `request` as is and reads its response. When the response says
/// `Connection: close`, checks that the server does close after it.
fn raw(addr: &str, request: &[u8]) -> Reply {
    let mut client = tcp_client(addr);
    // A server refusing an oversized head may stop reading: a failed write is no failure here.
    let _ = client.stream().write_all(request);
    let reply = read_reply(&mut client, request.starts_with(b"HEAD "));
    if reply.header("connection").as_deref() == Some("close") {
        let rest = client.read_to_end();
        assert!(
            rest.is_empty(),
            "more after a `Connection: close` response: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    reply
}

/// Reads one response off a connection that may stay open: the head up to its empty line,
/// then `Content-Length` bytes of body (none when it answers a HEAD request).
fn read_reply(client: &mut Client<TcpStream>, head_only: bool) -> Reply {
    let mut lines = vec![client.line()];
    loop {
        let line = client.line();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let head = lines.join("\r\n");
    let mut reply = parse_reply(format!("{head}\r\n\r\n").as_bytes());
    let length: usize = reply
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    if !head_only {
        reply.body = client.bytes(length);
    }
    reply
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

/// The `Connection` header a response to a plain HTTP/1.1 request carries in `mode`.
fn connection_in(mode: &[&str]) -> &'static str {
    if is_pooled(mode) {
        "keep-alive"
    } else {
        "close"
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
    for mode in MODES {
        serves_files_with_length_and_type(&site, mode);
    }
}

fn serves_files_with_length_and_type(site: &Site, mode: &[&str]) {
    let server = site.serve(mode);
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
        assert_eq!(reply.header("connection").as_deref(), Some(connection_in(mode)));
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
    assert_eq!(reply.header("connection").as_deref(), Some("close"));
    assert_no_panic(&server);
}

#[test]
fn http_head_has_the_headers_and_no_body() {
    let site = Site::new("http-head");
    for mode in MODES {
        head_has_the_headers_and_no_body(&site, mode);
    }
}

fn head_has_the_headers_and_no_body(site: &Site, mode: &[&str]) {
    let server = site.serve(mode);
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
    // A HEAD response has no body to read: the connection is at the next response at once.
    let mut client = tcp_client(&server.addr);
    client.send(b"HEAD /data.bin HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let reply = read_reply(&mut client, true);
    assert_eq!(reply.header("content-length").as_deref(), Some("200000"));
    if is_pooled(mode) {
        client.send(b"GET /hello.txt HTTP/1.0\r\n\r\n");
        assert_eq!(read_reply(&mut client, false).body, b"hello\n");
    }
    client.expect_eof();
}

#[test]
fn http_lists_directories_escaped_and_follows_indexes() {
    let site = Site::new("http-dirs");
    for mode in MODES {
        lists_directories_escaped_and_follows_indexes(&site, mode);
    }
}

fn lists_directories_escaped_and_follows_indexes(site: &Site, mode: &[&str]) {
    let server = site.serve(mode);
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
    for mode in MODES {
        let server = site.serve(mode);
        for target in ["/missing", "/hello.txt/", "/sub/missing/x", "/sub/inner.txt/"] {
            let reply = get(&server.addr, target);
            assert_eq!(reply.status, 404, "{target}");
            assert_eq!(reply.header("content-length"), Some(reply.body.len().to_string()));
            assert_eq!(
                reply.header("connection").as_deref(),
                Some("close"),
                "an error response closes"
            );
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
}

#[test]
fn http_never_serves_outside_the_root() {
    let site = Site::new("http-traversal");
    for mode in MODES {
        never_serves_outside_the_root(&site, mode);
    }
}

fn never_serves_outside_the_root(site: &Site, mode: &[&str]) {
    let server = site.serve(mode);
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
    for mode in MODES {
        hides_dot_files_unless_asked(&site, mode);
    }
}

fn hides_dot_files_unless_asked(site: &Site, mode: &[&str]) {
    let server = site.serve(mode);
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

    let mut show = vec!["--show-hidden"];
    show.extend_from_slice(mode);
    let server = site.serve(&show);
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
    for mode in MODES {
        rejects_malformed_and_unsupported_requests(&site, mode);
    }
}

fn rejects_malformed_and_unsupported_requests(site: &Site, mode: &[&str]) {
    let server = site.serve(mode);
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
    // A body whose length is not a number cannot be delimited (RFC 9112 section 6.3).
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n"),
        400
    );
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\na"),
        400
    );

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
    for mode in MODES {
        let server = site.serve(mode);
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
    for mode in MODES {
        let mut args = vec!["--delay", "700"];
        args.extend_from_slice(mode);
        let mut server = site.serve(&args);
        let mut client = TcpStream::connect(&server.addr).unwrap();
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        client.write_all(b"GET /data.bin HTTP/1.0\r\n\r\n").unwrap();
        thread::sleep(Duration::from_millis(200));
        server.stop_with(libc::SIGTERM);
        let mut response = Vec::new();
        client.read_to_end(&mut response).unwrap();
        let reply = parse_reply(&response);
        assert_eq!(reply.status, 200, "{mode:?}");
        assert_eq!(reply.body, site.data, "{mode:?}");
    }
}

/// A stop with connections open: one that sent nothing, one silent in the middle of a request
/// head, and one kept open after a response (in `--pooled` mode; the threading server closes
/// it after the response). All end, and the server exits within 2 s.
#[test]
fn http_sigint_with_an_idle_connection_exits_promptly() {
    let site = Site::new("http-idle");
    for mode in MODES {
        let mut server = site.serve(mode);
        let mut idle = tcp_client(&server.addr);
        let mut partial = tcp_client(&server.addr);
        partial.send(b"GET / HT");
        let mut kept = tcp_client(&server.addr);
        kept.send(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(read_reply(&mut kept, false).body, b"hello\n");
        thread::sleep(Duration::from_millis(100));
        server.stop_with(libc::SIGINT);
        assert!(idle.read_to_end().is_empty(), "no request, no response");
        partial.read_to_end();
        assert!(kept.read_to_end().is_empty(), "{mode:?}");
    }
}

/// curl fetching two URLs in one run: `--pooled` answers both on one connection (curl says
/// it re-uses it, and counts one connect); the threading server closes after each response.
#[test]
fn http_curl_reuses_the_connection_when_pooled() {
    let site = Site::new("http-reuse");
    for mode in MODES {
        let server = site.serve(mode);
        let (first, second) = (site.dir.join("first.out"), site.dir.join("second.out"));
        let out = curl(&[
            "-v",
            "-w",
            "%{num_connects}\n",
            "-o",
            first.to_str().unwrap(),
            "-o",
            second.to_str().unwrap(),
            &format!("http://{}/hello.txt", server.addr),
            &format!("http://{}/data.bin", server.addr),
        ]);
        let verbose = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode:?}: {verbose}");
        assert_eq!(std::fs::read(&first).unwrap(), b"hello\n");
        assert_eq!(std::fs::read(&second).unwrap(), site.data);
        let connects: u32 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|n| n.trim().parse::<u32>().expect("num_connects"))
            .sum();
        let reused = verbose.to_lowercase().contains("re-using existing connection");
        if is_pooled(mode) {
            assert_eq!(connects, 1, "{verbose}");
            assert!(reused, "{verbose}");
        } else {
            assert_eq!(connects, 2, "{verbose}");
            assert!(!reused, "{verbose}");
        }
        assert_no_panic(&server);
    }
}

/// `--pooled`: requests sent back to back in one write (pipelining) are answered in order on
/// the one connection, a HEAD among them; a pause between requests does not end the
/// connection; `Connection: close` does, after its response.
#[test]
fn http_pooled_answers_pipelined_requests_in_order() {
    let site = Site::new("http-pipelined");
    let server = site.serve(&["--pooled"]);
    let mut client = tcp_client(&server.addr);
    client.send(
        b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /data.bin HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /sub/inner.txt HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /data.bin HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let first = read_reply(&mut client, false);
    assert_eq!((first.status, first.body.as_slice()), (200, &b"hello\n"[..]));
    assert_eq!(first.header("connection").as_deref(), Some("keep-alive"));
    let head = read_reply(&mut client, true);
    assert_eq!(head.header("content-length").as_deref(), Some("200000"));
    assert_eq!(read_reply(&mut client, false).body, b"inner\n");
    assert_eq!(read_reply(&mut client, false).body, site.data);
    // Parked between requests, then served again.
    thread::sleep(Duration::from_millis(300));
    client.send(b"GET /page.html HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_reply(&mut client, false).body, b"<h1>page</h1>\n");
    // A request in pieces, the head split mid-line.
    client.send(b"GET /hello.txt HT");
    thread::sleep(Duration::from_millis(100));
    client.send(b"TP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let last = read_reply(&mut client, false);
    assert_eq!((last.status, last.body.as_slice()), (200, &b"hello\n"[..]));
    assert_eq!(last.header("connection").as_deref(), Some("close"));
    client.expect_eof();
    assert_no_panic(&server);
}

/// `--pooled`: which requests keep the connection open (RFC 9112 section 9.3), and that a
/// request body never passes for the next request.
#[test]
fn http_pooled_keeps_alive_only_when_it_can() {
    let site = Site::new("http-keep-alive");
    let server = site.serve(&["--pooled"]);
    let addr = server.addr.clone();
    // Sends `request` on a new connection, reads the response; whether the connection is still
    // open: the next request on it is answered.
    let kept_open = |request: &[u8]| -> (Reply, bool) {
        let mut client = tcp_client(&addr);
        client.send(request);
        let reply = read_reply(&mut client, false);
        let says = reply.header("connection").unwrap_or_default();
        let open = match says.as_str() {
            "keep-alive" => {
                client.send(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
                assert_eq!(read_reply(&mut client, false).body, b"hello\n");
                true
            }
            "close" => {
                client.expect_eof();
                false
            }
            other => panic!("Connection: {other:?}"),
        };
        (reply, open)
    };
    let (reply, open) = kept_open(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(open && reply.status == 200, "HTTP/1.1 keeps it open");
    let (_, open) = kept_open(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(!open, "Connection: close");
    let (_, open) = kept_open(b"GET /hello.txt HTTP/1.0\r\n\r\n");
    assert!(!open, "HTTP/1.0 closes by default");
    let (_, open) = kept_open(b"GET /hello.txt HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(open, "HTTP/1.0 with Connection: keep-alive");
    // Error responses close.
    for request in [
        &b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let (reply, open) = kept_open(request);
        assert!(
            reply.status >= 400 && !open,
            "{}: {}",
            String::from_utf8_lossy(request),
            reply.status
        );
    }
    // A redirect is no error.
    let (reply, open) = kept_open(b"GET /sub HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(reply.status == 301 && open);
    // A short body is skipped: the request after it is found, not read out of the body.
    let body = "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n";
    let request = format!(
        "GET /page.html HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (reply, open) = kept_open(request.as_bytes());
    assert!(open && reply.body == b"<h1>page</h1>\n");
    // A long body, or one in a transfer coding, is not: answered, and the connection closed.
    let mut long = b"GET /page.html HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'b', 100_000));
    let (reply, open) = kept_open(&long);
    assert!(reply.status == 200 && !open);
    let (reply, open) = kept_open(
        b"GET /page.html HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\n",
    );
    assert!(reply.status == 200 && !open);
    server_alive_and_clean(server);
}

/// `--pooled` takes `--tls-cert`/`--tls-key` (HTTPS keep-alive; served in
/// `examples_tls.rs`); a certificate file that cannot be read ends it at once, with status 2
/// and the file named.
#[test]
fn http_pooled_with_an_unreadable_certificate_exits_2() {
    let out = run_tool(
        example("http_server").to_str().unwrap(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--pooled",
            "--tls-cert",
            "no-such-cert.pem",
            "--tls-key",
            "no-such-key.pem",
        ],
        b"",
        IO_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-cert.pem"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
