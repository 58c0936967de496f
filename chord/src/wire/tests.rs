use super::*;
use crate::store::{Record, Refused};
use proptest::prelude::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn node(n: u8, addr: u32) -> NodeRef<u32> {
    NodeRef::new(Hash::from_bytes([n; 32]), addr)
}

fn samples() -> Vec<(Message<u32>, &'static str)> {
    vec![
        (
            Message::VersionMismatch(VersionMismatch { min: 1, max: 1 }),
            "c1ca03000101",
        ),
        (Message::Ping(Ping { txn: 300 }), "c1ca0301ac02"),
        (Message::Pong(Ping { txn: 300 }), "c1ca0302ac02"),
        (
            Message::GetNeighbors(GetNeighbors {
                txn: 1,
                sender: node(0xaa, 7),
                notify: true,
                want_fingers: false,
            }),
            "c1ca030301 20 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa070100",
        ),
        (
            Message::Neighbors(Neighbors {
                txn: 2,
                predecessor: Some(node(1, 1)),
                successors: vec![node(2, 2)],
                fingers: vec![],
            }),
            "c1ca0304 02 01 20 0101010101010101010101010101010101010101010101010101010101010101 01 \
             01 20 0202020202020202020202020202020202020202020202020202020202020202 02 00",
        ),
        (
            Message::FindSuccessor(FindSuccessor {
                txn: 3,
                lookup: 4,
                key: Hash::from_bytes([0x10; 32]),
                origin: node(5, 5),
                hops: 2,
                joining: false,
                via: Some(9),
            }),
            "c1ca0305 03 04 20 1010101010101010101010101010101010101010101010101010101010101010 \
             20 0505050505050505050505050505050505050505050505050505050505050505 05 02 00 01 09",
        ),
        (Message::HopAck(HopAck { txn: 3 }), "c1ca030603"),
        (
            Message::Found(Found {
                lookup: 4,
                key: Hash::from_bytes([0x10; 32]),
                owner: node(6, 6),
                hops: 2,
            }),
            "c1ca0307 04 20 1010101010101010101010101010101010101010101010101010101010101010 \
             20 0606060606060606060606060606060606060606060606060606060606060606 06 02",
        ),
        (
            Message::Leave(Leave {
                sender: Hash::from_bytes([9; 32]),
                predecessor: None,
                successors: vec![],
            }),
            "c1ca0308 20 0909090909090909090909090909090909090909090909090909090909090909 00 00",
        ),
        (
            Message::Data(Data {
                header: DataHeader {
                    txn: 1,
                    msg: 2,
                    origin: node(3, 3),
                    target: Hash::from_bytes([4; 32]),
                    mode: Mode::Node,
                    limit: Hash::ZERO,
                    hops: 5,
                    last_hop: true,
                    frag: 0,
                    frags: 1,
                },
                payload: Bytes::from_static(b"hi"),
            }),
            "c1ca030a 01 02 20 0303030303030303030303030303030303030303030303030303030303030303 03 \
             20 0404040404040404040404040404040404040404040404040404040404040404 01 \
             20 0000000000000000000000000000000000000000000000000000000000000000 05 01 00 01 6869",
        ),
        (
            Message::Delivered(Delivered {
                owner: node(6, 6),
                msgs: vec![Confirmed { msg: 2, hops: 3 }, Confirmed { msg: 300, hops: 1 }],
            }),
            "c1ca030b 20 0606060606060606060606060606060606060606060606060606060606060606 06 02 02 03 ac02 01",
        ),
        (
            Message::Undeliverable(Undeliverable { msg: 2, reason: Refusal::NoSuchNode }),
            "c1ca030c 02 00",
        ),
        (
            Message::Undeliverable(Undeliverable { msg: 3, reason: Refusal::Busy }),
            "c1ca030c 03 02",
        ),
        (
            Message::Observe(Observe { txn: 5, pad: vec![0; 2] }),
            "c1ca030f 05 02 0000",
        ),
        (
            Message::Observed(Observed { txn: 300, seen: 7 }),
            "c1ca0310 ac02 07",
        ),
        (
            Message::PunchRequest(PunchRequest {
                txn: 300,
                origin: node(1, 1),
                target: node(2, 2),
            }),
            "c1ca0318 ac02 20 0101010101010101010101010101010101010101010101010101010101010101 01 \
             20 0202020202020202020202020202020202020202020202020202020202020202 02",
        ),
        (
            Message::PunchOffer(PunchOffer { txn: 5, origin: node(1, 1), seen: 300 }),
            "c1ca0319 05 20 0101010101010101010101010101010101010101010101010101010101010101 01 ac02",
        ),
        (
            Message::PunchAnswer(PunchAnswer {
                txn: 5,
                target: node(2, 2),
                seen: 9,
                punchable: true,
            }),
            "c1ca031a 05 20 0202020202020202020202020202020202020202020202020202020202020202 02 09 01",
        ),
        (Message::PunchSync(PunchSync { txn: 300 }), "c1ca031b ac02"),
        (
            Message::RelayReserve(RelayReserve { txn: 5, peer: 7 }),
            "c1ca031c 05 07",
        ),
        (
            Message::RelayReserved(RelayReserved { txn: 300, ok: true }),
            "c1ca031d ac02 01",
        ),
        (
            Message::RelayTo(RelayFrame {
                header: RelayToHeader { to: 7, from: Some(300) },
                payload: Bytes::from_static(&[0xaa, 0xbb]),
            }),
            "c1ca031e 07 01ac02 aabb",
        ),
        (
            Message::RelayFrom(RelayFrame {
                header: RelayFromHeader { from: 7, relayed: true },
                payload: Bytes::from_static(&[0xaa]),
            }),
            "c1ca031f 07 01 aa",
        ),
        (
            Message::PunchRelayed(PunchRelayed { txn: 5, target: node(2, 2), relay: 9 }),
            "c1ca0320 05 20 0202020202020202020202020202020202020202020202020202020202020202 02 09",
        ),
        (
            Message::Store(StoreMessage::Get {
                txn: 5,
                key: Hash::from_bytes([0x10; 32]),
                direct: true,
                listen: false,
            }),
            "c1ca0311 02 05 20 1010101010101010101010101010101010101010101010101010101010101010 01 00",
        ),
        (
            Message::Store(StoreMessage::PutAck { txn: 300, refused: Some(Refused::CasMismatch) }),
            "c1ca0311 01 ac02 01 03",
        ),
        (
            Message::Store(StoreMessage::Replicate {
                records: vec![Record {
                    key: Hash::from_bytes([1; 32]),
                    kind: crate::store::Kind::Immutable,
                    value: b"hi".to_vec(),
                    ttl_s: 60,
                    writer: Hash::from_bytes([2; 32]),
                }],
            }),
            "c1ca0311 04 01 20 0101010101010101010101010101010101010101010101010101010101010101 00 02 6869 3c \
             20 0202020202020202020202020202020202020202020202020202020202020202",
        ),
        (
            Message::StoreFragment(StoreFragment { id: 7, frag: 1, frags: 3, bytes: vec![0xaa] }),
            "c1ca0312 07 01 03 01 aa",
        ),
        (
            Message::SuccessorHint(SuccessorHint { node: node(0x0b, 300) }),
            "c1ca0309 20 0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b ac02",
        ),
    ]
}

#[test]
fn golden_bytes() {
    for (msg, expected) in samples() {
        let expected: String = expected.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = msg.encode();
        assert_eq!(hex(&bytes), expected, "encoding of {msg:?}");
        if let Message::Delivered(d) = &msg {
            assert_eq!(hex(&encode_delivered(&d.owner, &d.msgs)), expected);
        }
        assert_eq!(Message::<u32>::decode(&bytes), Ok(msg));
    }
}

/// The borrowed encoding of a confirmation list is the message's,
/// short (on the stack) and long (past 256 bytes).
#[test]
fn delivered_lists_encode_alike_borrowed() {
    for n in [0, 1, 20, 96] {
        let msgs: Vec<Confirmed> = (0..n)
            .map(|i| Confirmed {
                msg: u64::MAX - i,
                hops: 7,
            })
            .collect();
        let owner = node(9, u32::MAX);
        let whole = Message::Delivered(Delivered {
            owner: owner.clone(),
            msgs: msgs.clone(),
        })
        .encode();
        assert_eq!(encode_delivered(&owner, &msgs), whole, "{n} confirmations");
        assert_eq!(whole.len() > ENCODE_ROOM, n >= 20, "both paths taken");
    }
}

#[test]
fn rejects_bad_headers() {
    assert_eq!(Message::<u32>::decode(b"C"), Err(DecodeError::TooShort(1)));
    assert_eq!(Message::<u32>::decode(b"GET /"), Err(DecodeError::BadMagic));
    assert_eq!(
        Message::<u32>::decode(&[0xC1, 0xCA, 9, 1, 0]),
        Err(DecodeError::UnsupportedVersion(9))
    );
    assert_eq!(
        Message::<u32>::decode(&[0xC1, 0xCA, VERSION, 200]),
        Err(DecodeError::UnknownKind(200))
    );
    assert!(matches!(
        Message::<u32>::decode(&[0xC1, 0xCA, VERSION, 1]),
        Err(DecodeError::Malformed { kind: "Ping", .. })
    ));
    assert!(matches!(
        Message::<u32>::decode(&[0xC1, 0xCA, VERSION, 6, 1, 2]),
        Err(DecodeError::Malformed { .. })
    ));
    assert_eq!(
        Message::<u32>::decode(&vec![0u8; MAX_DATAGRAM + 1]),
        Err(DecodeError::TooLong(MAX_DATAGRAM + 1))
    );
}

#[test]
fn rejects_overlong_lists() {
    let msg = Message::Neighbors(Neighbors {
        txn: 1,
        predecessor: None,
        successors: (0..MAX_LIST_ON_WIRE as u32 + 1)
            .map(|i| node(1, i))
            .collect(),
        fingers: vec![],
    });
    assert!(matches!(
        Message::<u32>::decode(&msg.encode()),
        Err(DecodeError::OverLimit(_))
    ));
}

#[test]
fn huge_length_prefix_does_not_allocate_wildly() {
    // Neighbors with a successor count of 2^32-1 and no data behind it.
    let bytes = [0xC1, 0xCA, VERSION, 4, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(Message::<u32>::decode(&bytes).is_err());
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::<u32>::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_behind_a_valid_header(kind in 0u8..32, body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut bytes = vec![0xC1, 0xCA, VERSION, kind];
        bytes.extend(body);
        let _ = Message::<std::net::SocketAddr>::decode(&bytes);
    }

    #[test]
    fn round_trip(txn in any::<u64>(), lookup in any::<u64>(), key in any::<[u8; 32]>(), hops in 0u8..64, addr in any::<u32>(), n in 0usize..20) {
        let origin = NodeRef::new(Hash::from_bytes(key), addr);
        let list: Vec<_> = (0..n).map(|i| NodeRef::new(Hash::of(i.to_be_bytes()), addr ^ i as u32)).collect();
        let msgs = vec![
            Message::Ping(Ping { txn }),
            Message::Pong(Ping { txn }),
            Message::GetNeighbors(GetNeighbors { txn, sender: origin.clone(), notify: n % 2 == 0, want_fingers: n % 3 == 0 }),
            Message::Neighbors(Neighbors { txn, predecessor: (n % 2 == 0).then(|| origin.clone()), successors: list.clone(), fingers: list.clone() }),
            Message::FindSuccessor(FindSuccessor { txn, lookup, key: Hash::from_bytes(key), origin: origin.clone(), hops, joining: n % 2 == 1, via: (n % 3 == 0).then_some(addr) }),
            Message::HopAck(HopAck { txn }),
            Message::Found(Found { lookup, key: Hash::from_bytes(key), owner: origin.clone(), hops }),
            Message::Leave(Leave { sender: Hash::from_bytes(key), predecessor: Some(origin.clone()), successors: list }),
            Message::SuccessorHint(SuccessorHint { node: origin.clone() }),
            Message::Data(Data { header: DataHeader { txn, msg: lookup, origin: origin.clone(), target: Hash::from_bytes(key), mode: Mode::Broadcast, limit: Hash::from_bytes(key), hops, last_hop: n % 2 == 0, frag: 0, frags: 1 + n as u16 }, payload: vec![7; n * 50].into() }),
            Message::Delivered(Delivered { owner: origin.clone(), msgs: vec![Confirmed { msg: lookup, hops }; n % 4] }),
            Message::Undeliverable(Undeliverable { msg: lookup, reason: Refusal::NoRoute }),
            Message::OwnerCheck(OwnerCheck { txn, key: Hash::from_bytes(key) }),
            Message::Owns(Owns { txn, yes: n % 2 == 0 }),
            Message::Observe(Observe { txn, pad: vec![0; n.min(OBSERVE_PAD)] }),
            Message::Observed(Observed { txn, seen: addr }),
            Message::PunchRequest(PunchRequest { txn, origin: origin.clone(), target: origin.clone() }),
            Message::PunchOffer(PunchOffer { txn, origin: origin.clone(), seen: addr }),
            Message::PunchAnswer(PunchAnswer { txn, target: origin.clone(), seen: addr, punchable: n % 2 == 0 }),
            Message::PunchSync(PunchSync { txn }),
            Message::RelayReserve(RelayReserve { txn, peer: addr }),
            Message::RelayReserved(RelayReserved { txn, ok: n % 2 == 0 }),
            Message::RelayTo(RelayFrame { header: RelayToHeader { to: addr, from: (n % 2 == 0).then_some(addr) }, payload: vec![7; n * 50].into() }),
            Message::RelayFrom(RelayFrame { header: RelayFromHeader { from: addr, relayed: n % 2 == 1 }, payload: vec![7; n * 50].into() }),
            Message::PunchRelayed(PunchRelayed { txn, target: origin.clone(), relay: addr }),
        ];
        for m in msgs {
            prop_assert_eq!(Message::<u32>::decode(&m.encode()), Ok(m));
        }
    }

    /// Every kind, with socket addresses (IPv4 and IPv6) as the UDP
    /// driver uses them, and the version-independent VersionMismatch.
    #[test]
    fn round_trip_every_kind_with_socket_addresses(
        txn in any::<u64>(), key in any::<[u8; 32]>(), v6 in any::<bool>(),
        ip in any::<[u8; 16]>(), port in any::<u16>(), n in 0usize..20,
        min in any::<u8>(), max in any::<u8>(), frags in 1u16..100, payload in proptest::collection::vec(any::<u8>(), 0..1300),
    ) {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
        let ip = if v6 { IpAddr::V6(Ipv6Addr::from(ip)) } else { IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])) };
        let addr = SocketAddr::new(ip, port);
        let me = NodeRef::new(Hash::from_bytes(key), addr);
        let list: Vec<_> = (0..n).map(|i| NodeRef::new(Hash::of(i.to_be_bytes()), SocketAddr::new(ip, port ^ i as u16))).collect();
        let h = Hash::from_bytes(key);
        let msgs: Vec<Message<SocketAddr>> = vec![
            Message::VersionMismatch(VersionMismatch { min, max }),
            Message::Ping(Ping { txn }),
            Message::Pong(Ping { txn }),
            Message::GetNeighbors(GetNeighbors { txn, sender: me.clone(), notify: v6, want_fingers: !v6 }),
            Message::Neighbors(Neighbors { txn, predecessor: Some(me.clone()), successors: list.clone(), fingers: list.clone() }),
            Message::FindSuccessor(FindSuccessor { txn, lookup: !txn, key: h, origin: me.clone(), hops: 63, joining: v6, via: v6.then_some(addr) }),
            Message::HopAck(HopAck { txn }),
            Message::Found(Found { lookup: txn, key: h, owner: me.clone(), hops: 1 }),
            Message::Leave(Leave { sender: h, predecessor: None, successors: list }),
            Message::SuccessorHint(SuccessorHint { node: me.clone() }),
            Message::Data(Data { header: DataHeader { txn, msg: !txn, origin: me.clone(), target: h, mode: Mode::Key, limit: Hash::ZERO, hops: 0, last_hop: v6, frag: frags - 1, frags }, payload: payload.clone().into() }),
            Message::Delivered(Delivered { owner: me.clone(), msgs: vec![Confirmed { msg: txn, hops: 9 }] }),
            Message::Undeliverable(Undeliverable { msg: txn, reason: Refusal::NoSuchNode }),
            Message::OwnerCheck(OwnerCheck { txn, key: h }),
            Message::Owns(Owns { txn, yes: v6 }),
            Message::Observe(Observe { txn, pad: vec![0; OBSERVE_PAD] }),
            Message::Observed(Observed { txn, seen: addr }),
            Message::PunchRequest(PunchRequest { txn, origin: me.clone(), target: me.clone() }),
            Message::PunchOffer(PunchOffer { txn, origin: me.clone(), seen: addr }),
            Message::PunchAnswer(PunchAnswer { txn, target: me.clone(), seen: addr, punchable: v6 }),
            Message::PunchSync(PunchSync { txn }),
            Message::RelayReserve(RelayReserve { txn, peer: addr }),
            Message::RelayReserved(RelayReserved { txn, ok: v6 }),
            Message::RelayTo(RelayFrame { header: RelayToHeader { to: addr, from: v6.then_some(addr) }, payload: payload.clone().into() }),
            Message::RelayFrom(RelayFrame { header: RelayFromHeader { from: addr, relayed: v6 }, payload: payload.clone().into() }),
            Message::PunchRelayed(PunchRelayed { txn, target: me.clone(), relay: addr }),
        ];
        for m in msgs {
            let bytes = m.encode();
            prop_assert!(bytes.len() <= MAX_DATAGRAM);
            prop_assert_eq!(Message::<SocketAddr>::decode(&bytes), Ok(m));
        }
    }
}
