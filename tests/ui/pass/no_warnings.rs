// The expansion is warning-free, documented and lint-clean: a crate that denies
// warnings and missing docs can declare public and private servers.
#![deny(warnings, missing_docs, unused, rust_2018_idioms)]
//! A crate with strict lints.

use std::io;

use sockserve::prelude::*;
use sockserve::server;

mod servers {
    use super::*;

    /// A public handler: its alias is public too, and documented by the macro.
    #[server(tcp, forking, max_children = 2)]
    pub struct Public;

    impl StreamHandler for Public {
        fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
            Ok(())
        }
    }

    /// A private handler whose alias nobody uses.
    #[server(udp, threading)]
    pub(crate) struct Private;

    impl DatagramHandler for Private {
        fn handle(&self, _req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
            Ok(())
        }
    }
}

fn main() {
    assert_eq!(<servers::Public as Declared>::OPTIONS.max_children, 2);
    assert_eq!(<servers::Private as Declared>::OPTIONS, Options::DEFAULT);
    let _: Option<servers::PublicServer> = None;
    let _ = (servers::Public, servers::Private);
}
