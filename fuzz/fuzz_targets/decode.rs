//! Fuzz target: `Message::decode` on arbitrary bytes, for both address
//! types the project uses. Whatever decodes must encode again and decode to
//! the same message (the encoding is canonical for everything we produce).
#![no_main]

use std::net::SocketAddr;

use chord::wire::Message;
use libfuzzer_sys::fuzz_target;

fn round_trip<A>(bytes: &[u8])
where
    A: chord::Address,
{
    if let Ok(msg) = Message::<A>::decode(bytes) {
        let again = msg.encode();
        assert!(again.len() <= chord::MAX_DATAGRAM + 64, "re-encoding grew");
        match Message::<A>::decode(&again) {
            Ok(back) => assert_eq!(back, msg, "round trip changed the message"),
            Err(e) => panic!("re-encoded message does not decode: {e}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<SocketAddr>(data);
    round_trip::<u32>(data);
});
