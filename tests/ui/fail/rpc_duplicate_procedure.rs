use sockserve::rpc_program;

struct Calc;

#[rpc_program(program = 0x2000_5353, version = 1)]
impl Calc {
    #[proc(1)]
    fn add(&self, a: i32) -> i32 {
        a + 1
    }

    #[proc(1)]
    fn sub(&self, a: i32) -> i32 {
        a - 1
    }
}

fn main() {}
