//! One request's path once it is taken: verify, finish (the handler's setup, handle and
//! finish), report failures, shut it down. The concurrency mix-ins run it wherever they
//! process a request: in the serving thread, a handler thread or a forked child.

use crate::context::ServerContext;
use crate::handler::{guarded, run_handle_error, run_hook, run_verify, Dispatch, RequestError};
use crate::transport::Transport;

/// The part of a server that request processing needs: transport, options, handler. The
/// concurrency mix-ins share it (`Arc`) with their threads and children.
pub struct Pipeline<T: Transport, H> {
    pub(crate) context: ServerContext<T>,
    pub(crate) handler: H,
}

impl<T: Transport, H> Pipeline<T, H> {
    /// What handlers see of the server.
    pub fn context(&self) -> &ServerContext<T> {
        &self.context
    }

    /// The handler (the server-wide state).
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Python's `shutdown_request`.
    pub fn shutdown_request(&self, request: T::Request) {
        self.context.transport.shutdown_request(request)
    }

    /// Python's `close_request`.
    pub fn close_request(&self, request: T::Request) {
        self.context.transport.close_request(request)
    }
}

/// The steps that ask the handler of the transport's kind (`StreamHandler`, `DatagramHandler`,
/// `RequestHandler`).
impl<T: Transport, H> Pipeline<T, H>
where
    T::Kind: Dispatch<T, H>,
{
    /// Python's `verify_request`: asks the handler. A panic counts as a refusal and is
    /// reported to `handle_error`.
    pub fn verify_request(&self, request: &T::Request, client_address: &T::Address) -> bool {
        run_verify(
            || T::Kind::verify_request(&self.handler, request, client_address),
            |error| self.handle_error(client_address, error),
        )
    }

    /// Python's `finish_request`: runs the handler's setup, handle and finish for one request.
    pub fn finish_request(
        &self,
        request: &mut T::Request,
        client_address: &T::Address,
    ) -> Result<(), RequestError> {
        T::Kind::finish_request(&self.handler, request, client_address, &self.context)
    }

    /// Python's `handle_error`: asks the handler. A panic inside it is logged, not spread.
    pub fn handle_error(&self, client_address: &T::Address, error: &RequestError) {
        run_handle_error(client_address, error, || {
            T::Kind::handle_error(&self.handler, client_address, error)
        })
    }

    /// Serves one request where the caller stands (Python's synchronous `process_request`):
    /// with a prepare stage ([`Transport::PREPARES`]), `prepare` then `verify_request` first;
    /// `finish_request`; on failure `handle_error`; then always `shutdown_request`. Returns
    /// whether the request succeeded.
    pub fn process_inline(&self, mut request: T::Request, mut client_address: T::Address) -> bool {
        if T::PREPARES {
            let transport = &self.context.transport;
            if let Err(error) = guarded(|| {
                transport
                    .prepare(&mut request, &mut client_address)
                    .map_err(RequestError::from_prepare)
            }) {
                self.handle_error(&client_address, &error);
                self.shutdown_request(request);
                return false;
            }
            if !self.verify_request(&request, &client_address) {
                self.shutdown_request(request);
                return false;
            }
        }
        let result = self.finish_request(&mut request, &client_address);
        if let Err(error) = &result {
            self.handle_error(&client_address, error);
        }
        self.shutdown_request(request);
        result.is_ok()
    }

    /// Python's `handle_timeout`: asks the handler; a panic is reported, not spread.
    pub fn handle_timeout(&self) {
        run_hook("handle_timeout", || {
            T::Kind::handle_timeout(&self.handler, &self.context)
        });
    }

    /// Python's `service_actions`: asks the handler; a panic is reported, not spread.
    pub fn service_actions(&self) {
        run_hook("service_actions", || {
            T::Kind::service_actions(&self.handler, &self.context)
        });
    }
}
