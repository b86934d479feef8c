//! Every XDR shape the derive takes, and the procedure forms the attribute takes, compile
//! without warnings.
#![deny(warnings)]

use sockserve::rpc::{AuthStat, Call, Credentials, ProcError, Program, RpcService, XdrString};
use sockserve::{rpc_program, Xdr};

#[derive(Xdr)]
enum Kind {
    A = 1,
    B = 5,
}

#[derive(Xdr)]
enum Result_ {
    #[xdr(case = 0)]
    Ok(u64),
    #[xdr(case = Kind::B as i32)]
    Named { reason: XdrString<32>, code: i32 },
    #[xdr(case = 7)]
    Void,
    #[xdr(default)]
    Unknown(i32),
}

#[derive(Xdr)]
struct Node<T> {
    value: T,
    kind: Kind,
    #[xdr(max = 16)]
    tags: Vec<String>,
    #[xdr(opaque, max = 64)]
    blob: Vec<u8>,
    #[xdr(opaque)]
    id: [u8; 16],
    next: Option<Box<Node<T>>>,
}

#[derive(Xdr)]
struct Unit;

#[derive(Xdr)]
struct Tuple(i32, bool);

struct Service;

const PROGRAM: u32 = 0x2000_0001;

#[rpc_program(program = PROGRAM, version = 2)]
impl Service {
    #[proc(1)]
    fn void(&self) {}

    #[proc(2)]
    fn node(&self, node: Node<u32>) -> Result_ {
        Result_::Ok(u64::from(node.value))
    }

    #[proc(3)]
    fn who(&self, call: &Call) -> Result<u32, ProcError> {
        match &call.credentials {
            Credentials::Sys(sys) => Ok(sys.uid),
            Credentials::None => Err(AuthStat::TooWeak.into()),
        }
    }

    #[proc(4)]
    fn both(&self, call: &Call, t: Tuple) -> Unit {
        let _ = (call, t);
        Unit
    }

    /// Not a procedure: an ordinary method stays.
    fn helper(&self) -> u32 {
        3
    }
}

fn main() {
    assert_eq!(<Service as Program>::PROGRAM, PROGRAM);
    assert_eq!(<Service as Program>::PROCEDURES, &[1, 2, 3, 4]);
    assert_eq!(Service.helper(), 3);
    let _ = RpcService::new().with(Service);
    let _ = (Kind::A, Result_::Void, Result_::Unknown(0), Result_::Named { reason: XdrString::default(), code: 0 });
}
