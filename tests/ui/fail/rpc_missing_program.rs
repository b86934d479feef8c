use sockserve::rpc_program;

struct Calc;

#[rpc_program(version = 1)]
impl Calc {
    #[proc(1)]
    fn add(&self, a: i32) -> i32 {
        a + 1
    }
}

struct Other;

#[rpc_program(program = 0x2000_5354, version = 1, versoin = 2)]
impl Other {
    #[proc(1)]
    fn add(&self, a: i32, b: i32) -> i32 {
        a + b
    }
}

fn main() {}
