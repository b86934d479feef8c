//! The synchronous model: Python's plain `TCPServer`/`UDPServer` behaviour.

use std::io;
use std::sync::Arc;

use super::{Concurrency, ProcessRequest};
use crate::handler::Dispatch;
use crate::options::Options;
use crate::pipeline::Pipeline;
use crate::transport::Transport;

/// Serves each request in the serving thread, one at a time.
#[derive(Debug, Default)]
pub struct Synchronous;

impl Concurrency for Synchronous {
    fn new(_options: &Options) -> io::Result<Self> {
        Ok(Synchronous)
    }
}

impl<T: Transport, H> ProcessRequest<T, H> for Synchronous
where
    T::Kind: Dispatch<T, H>,
{
    super::transport_kind_hooks!();

    fn process_request(&self, core: &Arc<Pipeline<T, H>>, request: T::Request, client_address: T::Address) {
        core.process_inline(request, client_address);
    }
}
