//! XDR decoding and RPC call parsing (`sockserve-rpc/src/xdr.rs` and `msg.rs`, compiled by
//! path) on arbitrary bytes.
//!
//! - `parse_call` never panics; a parsed call's arguments are a suffix of the input;
//! - each XDR type decodes without panicking or allocating beyond what the input holds, and
//!   a decoded value re-encodes to as many bytes as it consumed and decodes back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../sockserve-rpc/src/xdr.rs"]
mod xdr;

#[allow(dead_code)]
#[path = "../../sockserve-rpc/src/msg.rs"]
mod msg;

use xdr::{Decoder, FixedOpaque, Opaque, VarArray, Xdr, XdrString};

fn check<T: Xdr + PartialEq + std::fmt::Debug>(input: &[u8]) {
    let mut d = Decoder::new(input);
    let Ok(value) = T::decode(&mut d) else { return };
    let consumed = d.position();
    assert!(consumed <= input.len());
    let encoded = xdr::to_bytes(&value).expect("a decoded value is within its bounds");
    assert_eq!(encoded.len(), consumed, "{value:?}");
    let again: T = xdr::from_bytes(&encoded).expect("re-encoded bytes decode");
    assert_eq!(again, value);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    for protocol in [msg::Protocol::Datagram, msg::Protocol::Stream] {
        if let Ok((call, args)) = msg::parse_call(input, protocol) {
            assert!(args.rest().len() <= input.len());
            assert_eq!(&input[input.len() - args.rest().len()..], args.rest());
            assert_eq!(call.protocol, protocol);
        }
    }
    match which % 12 {
        0 => check::<u32>(input),
        1 => check::<i64>(input),
        2 => check::<bool>(input),
        3 => check::<String>(input),
        4 => check::<XdrString<16>>(input),
        5 => check::<Opaque<8>>(input),
        6 => check::<FixedOpaque<5>>(input),
        7 => check::<Vec<Vec<u32>>>(input),
        8 => check::<VarArray<XdrString<8>, 4>>(input),
        9 => check::<Option<Box<Option<u64>>>>(input),
        10 => check::<[Option<u32>; 3]>(input),
        _ => check::<Vec<Option<Vec<()>>>>(input),
    }
});
