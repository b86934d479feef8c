//! Zero-downtime reload: SIGHUP makes a gallery server start a new process of itself, hand it
//! the listening socket and drain. A load generator runs across three reloads and counts every
//! failed connection and every lost or wrong reply; for a threading (`echo_tcp`), a pooled
//! (`echo_tcp --pooled`), a multiplex (`echo_multiplex`) and a forking (`forking_tcp`) server. Bounded: 4 clients, at most 3,000 connections each, 60 s.

mod examples_support;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use examples_support::*;

const CLIENTS: usize = 4;
const MAX_PER_CLIENT: usize = 3000;
const LOAD_LIMIT: Duration = Duration::from_secs(60);
/// Connections completed between two reloads, at least.
const BETWEEN: usize = 100;

/// One connection: `n\n` out, the whole reply in; whether it is the answer `expected` wants.
fn one(addr: &str, n: usize, expected: fn(&str, &str) -> bool) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let line = format!("{n}\n");
    let reply = half_close_exchange(stream, &line)?;
    if expected(&reply, &line) {
        Ok(())
    } else {
        Err(format!("reply {reply:?} to {line:?}"))
    }
}

/// The pids that took over so far, from the servers' log (`reload: process PID took over`).
fn successors(server: &Server) -> Vec<u32> {
    server
        .stderr()
        .lines()
        .filter_map(|l| {
            l.split_once("reload: process ")?
                .1
                .split_once(' ')?
                .0
                .parse()
                .ok()
        })
        .collect()
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid of a server process this test started (or its successor).
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

fn three_reloads_under_load(name: &str, flags: &[&str], expected: fn(&str, &str) -> bool) {
    let mut args = vec!["--bind", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    let mut server = Server::start(name, &args);
    let addr = server.addr.clone();
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, done, stop) = (addr.clone(), Arc::clone(&done), Arc::clone(&stop));
            thread::spawn(move || {
                let deadline = Instant::now() + LOAD_LIMIT;
                let mut failures = Vec::new();
                for i in 0..MAX_PER_CLIENT {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        break;
                    }
                    if let Err(e) = one(&addr, c * MAX_PER_CLIENT + i, expected) {
                        failures.push(e);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                failures
            })
        })
        .collect();
    let wait_for = |count: usize| {
        let deadline = Instant::now() + LOAD_LIMIT;
        while done.load(Ordering::SeqCst) < count {
            assert!(Instant::now() < deadline, "the load stalled at {count}");
            thread::sleep(Duration::from_millis(5));
        }
    };
    let mut current = server.pid();
    for reload in 1..=3 {
        wait_for(done.load(Ordering::SeqCst) + BETWEEN);
        signal(current, libc::SIGHUP);
        let deadline = Instant::now() + STARTUP;
        while successors(&server).len() < reload {
            assert!(
                Instant::now() < deadline,
                "reload {reload}: no successor; {}",
                server.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
        current = successors(&server)[reload - 1];
    }
    wait_for(done.load(Ordering::SeqCst) + BETWEEN);
    stop.store(true, Ordering::SeqCst);
    let failures: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let total = done.load(Ordering::SeqCst);
    println!(
        "{name} {flags:?}: {total} connections across 3 reloads, {} failed",
        failures.len()
    );
    // The first process drained and exited 0; the last one stops on SIGTERM.
    let status = server
        .wait_exit(STOP)
        .expect("the first process did not exit after handing over");
    assert!(status.success(), "{status}");
    signal(current, libc::SIGTERM);
    let deadline = Instant::now() + STOP;
    while TcpStream::connect(&addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the last process still accepts after SIGTERM"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

#[test]
fn echo_tcp_three_reloads_under_load_lose_nothing() {
    three_reloads_under_load("echo_tcp", &[], |reply, line| reply == line);
}

#[test]
fn echo_tcp_pooled_three_reloads_under_load_lose_nothing() {
    three_reloads_under_load("echo_tcp", &["--pooled"], |reply, line| reply == line);
}

#[test]
fn echo_multiplex_three_reloads_under_load_lose_nothing() {
    three_reloads_under_load("echo_multiplex", &[], |reply, line| reply == line);
}

#[test]
fn forking_tcp_three_reloads_under_load_lose_nothing() {
    three_reloads_under_load("forking_tcp", &[], |reply, line| {
        reply.starts_with("pid ") && reply.split_once(": ").is_some_and(|(_, rest)| rest == line)
    });
}

/// A program that binds its own address (`kv_store` does not adopt an inherited socket): its
/// successor says `READY=1` without taking the shared socket. The reload must fail and the old
/// process keep serving on its socket; the successor is stopped, not left running elsewhere.
#[test]
fn a_successor_that_does_not_take_the_socket_is_stopped_and_the_old_process_serves_on() {
    let mut server = Server::start("kv_store", &["--bind", "127.0.0.1:0"]);
    let addr = server.addr.clone();
    assert_eq!(
        half_close_exchange(TcpStream::connect(&addr).unwrap(), "SET k before\n").unwrap(),
        "OK\n"
    );
    signal(server.pid(), libc::SIGHUP);
    let marker = "without taking the listening socket";
    assert!(
        wait_until(STARTUP, || server.stderr().contains(marker)),
        "the reload did not fail; stderr:\n{}",
        server.stderr()
    );
    let stderr = server.stderr();
    let pid: u32 = stderr
        .split_once("the new process ")
        .and_then(|(_, rest)| rest.split_once(' '))
        .and_then(|(pid, _)| pid.parse().ok())
        .unwrap_or_else(|| panic!("no successor pid in:\n{stderr}"));
    // Stopped and reaped by the old process.
    assert!(
        wait_until(STOP, || !std::path::Path::new(&format!("/proc/{pid}")).exists()),
        "successor {pid} still running"
    );
    assert!(!stderr.contains("took over"), "{stderr}");
    // Still the one server on the socket, with its state.
    assert_eq!(
        half_close_exchange(TcpStream::connect(&addr).unwrap(), "GET k\n").unwrap(),
        "VALUE before\n"
    );
    server.stop_with(libc::SIGTERM);
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}
