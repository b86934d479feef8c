#[sockserve::server(tcp)]
enum Echo {
    Loud,
    Quiet,
}

fn main() {}
