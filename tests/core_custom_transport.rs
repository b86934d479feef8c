//! A transport that is not a socket: an in-memory job queue, served by a `RequestHandler`
//! (the seed's "rows of a SQL table via get_request", without the database).

mod util;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sockserve::concurrency::{Synchronous, Threading};
use sockserve::transport::{BaseKind, Transport};
use sockserve::{BaseRequest, Options, RequestError, RequestHandler, Server};
use util::{eventually, Running, LIMIT};

/// Jobs waiting in memory; `get_request` pops the next one.
#[derive(Clone, Default)]
struct Queue(Arc<Mutex<VecDeque<u32>>>);

impl Queue {
    fn push(&self, job: u32) {
        self.0.lock().unwrap().push_back(job);
    }
}

/// Where a job came from: its position in the queue.
#[derive(Clone, Debug)]
struct JobId(u32);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job #{}", self.0)
    }
}

impl Transport for Queue {
    type Request = u32;
    type Address = JobId;
    type ServerAddress = String;
    type BindAddress = Queue;
    type Kind = BaseKind;

    fn open(address: Queue, _options: &Options) -> io::Result<Self> {
        Ok(address)
    }
    fn server_bind(&mut self, _options: &Options) -> io::Result<()> {
        Ok(())
    }
    fn server_activate(&mut self, _options: &Options) -> io::Result<()> {
        Ok(())
    }
    fn server_address(&self) -> String {
        "memory queue".into()
    }
    fn fileno(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    fn get_request(&self) -> io::Result<Option<(u32, JobId)>> {
        let job = self.0.lock().unwrap().pop_front();
        // A bug in the transport, for the test of panics in get_request.
        assert_ne!(job, Some(666), "get_request bug on job 666");
        Ok(job.map(|job| (job, JobId(job))))
    }
}

/// Records the jobs it processed; job 13 fails.
#[derive(Default)]
struct Worker {
    done: Mutex<Vec<u32>>,
    failed: Mutex<Vec<String>>,
}

impl RequestHandler<Queue> for Worker {
    fn handle(&self, req: &mut BaseRequest<'_, Queue>) -> io::Result<()> {
        if *req.request == 13 {
            return Err(io::Error::other("unlucky"));
        }
        assert_eq!(req.server.server_address(), "memory queue");
        self.done.lock().unwrap().push(*req.request);
        Ok(())
    }
    fn verify_request(&self, request: &u32, _client_address: &JobId) -> bool {
        *request != 0
    }
    fn handle_error(&self, client_address: &JobId, error: &RequestError) {
        self.failed
            .lock()
            .unwrap()
            .push(format!("{client_address}: {error}"));
    }
}

#[test]
fn a_queue_without_a_descriptor_is_polled_every_poll_interval() {
    let queue = Queue::default();
    let options = Options::DEFAULT.poll_interval(Duration::from_millis(10));
    let server: Server<Queue, Synchronous, Worker> =
        Server::from_transport(queue.clone(), Worker::default(), options).unwrap();
    let running = Running::start(server);
    for job in [1, 2, 0, 13, 3] {
        queue.push(job);
    }
    let handler = running.server.handler();
    assert!(eventually(LIMIT, || handler.done.lock().unwrap().len() == 3));
    assert_eq!(
        *handler.done.lock().unwrap(),
        [1, 2, 3],
        "0 was refused by verify_request"
    );
    assert_eq!(*handler.failed.lock().unwrap(), ["job #13: unlucky"]);
    // Jobs added later are picked up within a poll interval or so.
    queue.push(4);
    assert!(eventually(LIMIT, || handler.done.lock().unwrap().len() == 4));
    // Shutdown does not wait for the poll interval either.
    let started = Instant::now();
    let (result, _) = running.stop();
    result.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_custom_transport_works_with_threading_and_handle_request() {
    let queue = Queue::default();
    let options = Options::DEFAULT
        .poll_interval(Duration::from_millis(10))
        .timeout(Some(Duration::from_millis(50)));
    let server: Server<Queue, Threading, Worker> =
        Server::from_transport(queue.clone(), Worker::default(), options).unwrap();
    // Nothing queued: handle_request times out.
    let started = Instant::now();
    server.handle_request().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
    queue.push(7);
    server.handle_request().unwrap();
    assert!(eventually(LIMIT, || *server.handler().done.lock().unwrap() == [7]));
}

#[test]
fn a_panic_in_get_request_backs_off_and_the_loop_goes_on() {
    let queue = Queue::default();
    let options = Options::DEFAULT.poll_interval(Duration::from_millis(10));
    let server: Server<Queue, Synchronous, Worker> =
        Server::from_transport(queue.clone(), Worker::default(), options).unwrap();
    let running = Running::start(server);
    for job in [1, 666, 2] {
        queue.push(job);
    }
    let handler = running.server.handler();
    assert!(eventually(LIMIT, || handler.done.lock().unwrap().len() == 2));
    assert_eq!(*handler.done.lock().unwrap(), [1, 2]);
    assert!(!running.is_finished(), "serve_forever is still serving");
    let (result, _) = running.stop();
    result.unwrap();
}

#[test]
fn a_huge_timeout_means_no_timeout() {
    let queue = Queue::default();
    let options = Options::DEFAULT
        .poll_interval(Duration::from_millis(10))
        .timeout(Some(Duration::MAX));
    let server: Server<Queue, Synchronous, Worker> =
        Server::from_transport(queue.clone(), Worker::default(), options).unwrap();
    queue.push(5);
    server.handle_request().unwrap();
    assert_eq!(*server.handler().done.lock().unwrap(), [5]);
}
