#[sockserve::server(tcp)]
fn echo() {}

fn main() {}
