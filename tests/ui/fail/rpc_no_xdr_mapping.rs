use sockserve::{rpc_program, Xdr};

#[derive(Xdr)]
struct Args {
    count: usize,
    name: String,
}

struct Calc;

#[rpc_program(program = 0x2000_5353, version = 1)]
impl Calc {
    #[proc(1)]
    fn scale(&self, factor: u8) -> char {
        let _ = factor;
        'x'
    }

    #[proc(2)]
    fn many(&self, args: Args) -> u32 {
        args.name.len() as u32
    }
}

fn main() {}
