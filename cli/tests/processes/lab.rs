//! Swarms of `cicada node` processes spread over the project's network lab
//! (`scripts/netlab`): public hosts, a LAN behind a UPnP gateway, LANs
//! behind gateways that map nothing (one endpoint-independent, one
//! symmetric), dual-stack. Every peer is bound to all interfaces
//! (`0.0.0.0:P` or `[::]:P`) and learns the address it announces from
//! where others see it. Each test brings up its own lab and skips through
//! `require` (need `netlab`) where the lab cannot be built.

use super::*;
use netlab::Lab;

/// The lab of these tests: two public hosts, LAN 1 behind a UPnP/NAT-PMP
/// gateway, LAN 2 behind an endpoint-independent NAT and LAN 3 behind a
/// symmetric one, both without any mapping service; dual-stack.
const KNOBS: [(&str, &str); 10] = [
    ("NETLAB_PUBLIC", "2"),
    ("NETLAB_LANS", "3"),
    ("NETLAB_HOSTS", "2"),
    ("NETLAB_IPV6", "yes"),
    ("NETLAB_GW2_UPNP", "no"),
    ("NETLAB_GW2_NATPMP", "no"),
    ("NETLAB_GW3_UPNP", "no"),
    ("NETLAB_GW3_NATPMP", "no"),
    ("NETLAB_GW2_NAT", "eim"),
    ("NETLAB_GW3_NAT", "symmetric"),
];

/// Starts `cicada node --bind BIND [--join JOIN] EXTRA` in `role` and, when
/// it joins a swarm, waits for its `joined` event and takes the address
/// and id it joined under.
fn start(lab: &Lab, role: &str, bind: &str, join: Option<&str>, extra: &[&str]) -> Node {
    let port: u16 = bind
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mut args = vec!["--bind", bind];
    if let Some(j) = join {
        args.extend(["--join", j]);
    }
    args.extend(extra);
    let mut node = node_in(lab, role, port, &args);
    if join.is_some() {
        let joined = node
            .wait_for(0, Duration::from_secs(15), is("joined"))
            .unwrap_or_else(|| {
                panic!(
                    "{role} {bind} never joined {join:?}: {:?}",
                    node.all(|_| true)
                )
            });
        node.addr = joined["addr"].as_str().unwrap_or_default().to_string();
        node.id = joined["id"].as_str().unwrap_or_default().to_string();
    }
    node
}

/// The address and id `node` announces now: its latest `joined` or
/// `address` event.
fn refresh(node: &mut Node) {
    let latest = node
        .all(|v| v["event"] == "joined" || v["event"] == "address")
        .pop();
    if let Some(v) = latest {
        node.addr = v["addr"].as_str().unwrap_or_default().to_string();
        node.id = v["id"].as_str().unwrap_or_default().to_string();
    }
}

/// Waits for a `nat` event of `node` that `pred` accepts.
fn nat_event(node: &Node, within: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    node.wait_for(0, within, move |v| v["event"] == "nat" && pred(v))
}

/// Sends from every node of `from` to every node of `to` (by address),
/// then checks that each send was confirmed and received exactly once.
fn all_pairs(nodes: &mut [Node], from: &[usize], to: &[usize], tag: &str) -> Result<(), String> {
    let marks: Vec<usize> = nodes.iter().map(|n| n.len()).collect();
    let mut sent = Vec::new();
    for &i in from {
        for &j in to {
            if i != j {
                let data = format!("{tag}-{i}-{j}");
                let target = nodes[j].addr.clone();
                nodes[i].cmd(&format!("send {target} {data}"));
                sent.push((i, j, data));
            }
        }
    }
    let mut wrong = Vec::new();
    for (i, j, data) in &sent {
        let d = data.clone();
        let ev = nodes[*i].wait_for(marks[*i], Duration::from_secs(20), move |v| {
            v["event"] == "sent" && v["data"] == d.as_str()
        });
        let ok = ev.as_ref().is_some_and(|v| v["ok"] == true);
        nodes[*j].wait_for(marks[*j], Duration::from_secs(3), recv_of(data.clone()));
        let got = nodes[*j].all(recv_of(data.clone())).len();
        if !ok || got != 1 {
            wrong.push(format!(
                "{} -> {}: received {got} times, sender said {ev:?}",
                nodes[*i].addr, nodes[*j].addr
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n"))
    }
}

/// A broadcast from `origin` reaches every other node of `live` exactly once.
fn broadcast_reaches_all(nodes: &mut [Node], live: &[usize], origin: usize, data: &str) {
    nodes[origin].cmd(&format!("broadcast {data}"));
    for &i in live {
        if i == origin {
            continue;
        }
        nodes[i].wait_for(0, Duration::from_secs(10), recv_of(data.into()));
    }
    thread::sleep(Duration::from_millis(300));
    for &i in live {
        let got = nodes[i].all(recv_of(data.into())).len();
        let want = usize::from(i != origin);
        assert_eq!(
            got, want,
            "broadcast {data} reached {} {got} times",
            nodes[i].addr
        );
    }
}

/// A lookup of a key from every node of `live` names the key's true owner:
/// the first id at or after the key among `live`.
fn lookups_name_the_owner(nodes: &mut [Node], live: &[usize]) {
    let mut ring: Vec<(String, String)> = live
        .iter()
        .map(|&i| (nodes[i].id.clone(), nodes[i].addr.clone()))
        .collect();
    ring.sort();
    for (k, &i) in live.iter().enumerate() {
        for text in [format!("lab-key-{k}"), format!("lab-key-{k}-b")] {
            let key = Hash::of(&text).to_string();
            let want = ring
                .iter()
                .find(|(id, _)| *id >= key)
                .unwrap_or(&ring[0])
                .1
                .clone();
            let mark = nodes[i].len();
            nodes[i].cmd(&format!("lookup {key}"));
            let k2 = key.clone();
            let v = nodes[i].wait_for(mark, Duration::from_secs(10), move |v| {
                v["event"] == "lookup" && v["key"] == k2.as_str()
            });
            assert_eq!(
                v.as_ref().and_then(|v| v["owner"].as_str()),
                Some(want.as_str()),
                "lookup {key} from {}: {v:?}",
                nodes[i].addr
            );
        }
    }
}

/// The IP of `addr` (`IP:PORT` or `[IP]:PORT`).
fn ip_of(addr: &str) -> String {
    addr.parse::<SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// Eight members over three hosts (two public hosts, one LAN host behind
/// a UPnP gateway with `--map`), bound to `0.0.0.0:P` and `[::]:P`: the
/// ring is correct, every pair's sends arrive once, a broadcast reaches
/// all, lookups name the true owner. Then a peer behind an
/// endpoint-independent NAT and one behind a symmetric NAT, neither with a
/// mapping, join: they say they are behind a NAT, tell how it maps once a
/// second public host has answered them, and reach every member.
#[test]
fn a_swarm_over_public_hosts_and_nats_routes_sends_and_knows_where_it_stands() {
    let _g = heavy();
    let Some(lab) = Lab::up("a_swarm_over_public_hosts_and_nats", &KNOBS) else {
        return;
    };
    let (pub1, pub2, gw1) = (lab.ip("pub1"), lab.ip("pub2"), lab.ip("gw1"));
    let first = format!("{pub1}:41001");
    let second = format!("{pub2}:41004");
    // (role, bind, bootstrap)
    let plan: [(&str, &str, Option<&str>); 8] = [
        ("pub1", "0.0.0.0:41001", None),
        ("pub1", "[::]:41002", Some(&first)),
        ("pub1", "0.0.0.0:41003", Some(&first)),
        ("pub2", "[::]:41004", Some(&first)),
        ("pub2", "0.0.0.0:41005", Some(&second)),
        ("pub2", "[::]:41006", Some(&second)),
        ("pub2", "0.0.0.0:41007", Some(&first)),
        ("lan1-1", "0.0.0.0:41008", Some(&second)),
    ];
    let mut nodes: Vec<Node> = Vec::new();
    for (role, bind, join) in plan {
        let extra: &[&str] = if role == "lan1-1" { &["--map"] } else { &[] };
        nodes.push(start(&lab, role, bind, join, extra));
    }
    let members: Vec<usize> = (0..nodes.len()).collect();
    // The first peer learnt its address from its first contact.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[0].all(is("address")).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    for n in nodes.iter_mut() {
        refresh(n);
    }
    for (n, (role, bind, _)) in nodes.iter().zip(plan) {
        let port = bind.rsplit(':').next().unwrap_or_default();
        let want = match role {
            "pub1" => format!("{pub1}:{port}"),
            "pub2" => format!("{pub2}:{port}"),
            _ => n.addr.clone(),
        };
        assert_eq!(n.addr, want, "{role} {bind} announces where it is seen");
        assert_eq!(n.id, Hash::of(&n.addr).to_string(), "{role} {bind}: id");
    }
    // The LAN peer is reached at its mapped address, which it reports.
    let mapped = &nodes[7];
    assert_eq!(
        ip_of(&mapped.addr),
        gw1,
        "the LAN peer announces its mapping"
    );
    let ext_port = mapped.addr.rsplit(':').next().unwrap_or_default();
    assert!(
        lab.mappings("gw1").contains(&format!("dport {ext_port} ")),
        "no DNAT rule for {}: {}",
        mapped.addr,
        lab.mappings("gw1")
    );
    let said = nat_event(mapped, Duration::from_secs(5), |v| v["status"] == "mapped");
    assert_eq!(
        said.as_ref().and_then(|v| v["addr"].as_str()),
        Some(mapped.addr.as_str()),
        "the mapped peer's nat events: {:?}",
        mapped.all(is("nat"))
    );
    for n in &nodes[..7] {
        let said = nat_event(n, Duration::from_secs(5), |v| v["status"] == "public");
        assert_eq!(
            said.as_ref().and_then(|v| v["addr"].as_str()),
            Some(n.addr.as_str()),
            "{}: nat events {:?}",
            n.addr,
            n.all(is("nat"))
        );
    }

    wait_ring(&mut nodes, &members, Duration::from_secs(30)).expect("the ring of eight");
    all_pairs(&mut nodes, &members, &members, "pairs").expect("all pairs");
    broadcast_reaches_all(&mut nodes, &members, 3, "lab-bcast-from-pub2");
    broadcast_reaches_all(&mut nodes, &members, 7, "lab-bcast-from-lan1");
    lookups_name_the_owner(&mut nodes, &members);

    // Behind an endpoint-independent NAT without a mapping (gw2 keeps
    // the socket's port for every destination, so the address the peer
    // will be seen at, and its id, are known in advance). Its NAT lets in
    // only peers it has sent to, and the answer to its joining lookup comes
    // from the key's predecessor: it joins all the same through a bootstrap
    // that is not its predecessor, which relays that answer
    // (docs/protocol.md, "Join").
    let gw2 = lab.ip("gw2").to_string();
    let seen = format!("{gw2}:41009");
    let id = Hash::of(&seen).to_string();
    let mut ring: Vec<(String, String)> = members
        .iter()
        .map(|&i| (nodes[i].id.clone(), nodes[i].addr.clone()))
        .collect();
    ring.sort();
    let after = ring.iter().position(|(m, _)| *m > id).unwrap_or(0);
    let m = ring.len();
    let predecessor = ring[(after + m - 1) % m].1.clone();
    let elsewhere = ring[(after + 2) % m].1.clone();
    assert_ne!(elsewhere, predecessor);
    let mut n = start(&lab, "lan2-1", "0.0.0.0:41009", Some(&elsewhere), &[]);
    assert_eq!(n.addr, seen, "lan2-1 announces its NAT's mapping");
    assert_eq!(n.id, id, "lan2-1: id");
    let said = nat_event(&n, Duration::from_secs(5), |v| v["status"] == "nat");
    assert!(said.is_some(), "lan2-1: nat events {:?}", n.all(is("nat")));
    // Ask a public host its bootstrap is not on: the mapping is told apart.
    let other = if ip_of(&predecessor) == pub1 {
        format!("{pub2}:41005")
    } else {
        first.clone()
    };
    observe_and_expect(&mut n, &other, &gw2, "endpoint-independent");
    assert_eq!(
        n.all(is("observed"))[0]["seen"].as_str(),
        Some(seen.as_str()),
        "an endpoint-independent NAT shows every peer the same address"
    );
    nodes.push(n);
    let natted = nodes.len() - 1;
    // Outbound: its sends to every member are confirmed and arrive once.
    all_pairs(&mut nodes, &[natted], &members, "out-lan2").expect("lan2-1 sends out");
    // Its NAT keeps one port for all, and it has sent to every member of
    // so small a swarm (stabilizing, probing fingers): the NAT lets them
    // all in, and it is a full member.
    let everyone: Vec<usize> = (0..nodes.len()).collect();
    wait_ring(&mut nodes, &everyone, Duration::from_secs(30)).expect("the ring of nine");
    all_pairs(&mut nodes, &members, &[natted], "in-lan2").expect("sends to lan2-1");

    // A LAN host joining through a peer of its own LAN (the mapped one, by
    // its LAN address) is seen there at its LAN address and announces it,
    // although peers outside see it at the gateway's: its successor (a
    // public peer) does, and it says `nat`, not `public` (docs/nat.md,
    // "Which address a peer announces"). The port is chosen so that its
    // bootstrap is the peer before it (the join's answer comes from there:
    // from anyone outside, the LAN address is unreachable) and the peer
    // after it a public one.
    let lan12 = lab.ip("lan1-2").to_string();
    let mut ring: Vec<(String, usize)> =
        (0..nodes.len()).map(|i| (nodes[i].id.clone(), i)).collect();
    ring.sort();
    let neighbours_of = |id: &str| {
        let after = ring.iter().position(|(m, _)| m.as_str() > id).unwrap_or(0);
        let k = ring.len();
        (ring[(after + k - 1) % k].1, ring[after].1)
    };
    let port = (41060..41600)
        .find(|p| {
            let (pred, succ) = neighbours_of(&Hash::of(format!("{lan12}:{p}")).to_string());
            pred == 7 && succ < 7
        })
        .expect("a port between the mapped peer and a public one");
    let inside = format!("{}:41008", lab.ip("lan1-1"));
    let lan_joiner = start(
        &lab,
        "lan1-2",
        &format!("0.0.0.0:{port}"),
        Some(&inside),
        &[],
    );
    assert_eq!(
        lan_joiner.addr,
        format!("{lan12}:{port}"),
        "announces its LAN address"
    );
    let said = nat_event(&lan_joiner, Duration::from_secs(5), |v| {
        v["status"] == "nat" && v["addr"] == format!("{gw1}:{port}").as_str()
    });
    assert!(
        said.is_some(),
        "a LAN peer seen outside through its gateway: {:?}",
        lan_joiner.all(is("nat"))
    );
    drop(lan_joiner);

    // Behind a symmetric NAT (gw3: a new port for every destination): its
    // id cannot be known in advance, so it joins a swarm whose only member
    // is its bootstrap, sends, and asks a second public host.
    let mut lone = start(&lab, "pub2", "0.0.0.0:41011", None, &[]);
    let gw3 = lab.ip("gw3").to_string();
    let mut n = start(
        &lab,
        "lan3-1",
        "[::]:41010",
        Some(&format!("{pub2}:41011")),
        &["--send-timeout-ms", "3000"],
    );
    assert_eq!(ip_of(&n.addr), gw3, "lan3-1 announces its NAT's mapping");
    assert_eq!(n.id, Hash::of(&n.addr).to_string(), "lan3-1: id");
    assert!(lone
        .wait_for(0, Duration::from_secs(5), is("address"))
        .is_some());
    refresh(&mut lone);
    assert_eq!(lone.addr, format!("{pub2}:41011"));
    observe_and_expect(&mut n, &first, &gw3, "address-dependent");
    assert_ne!(
        n.all(is("observed"))[0]["seen"].as_str(),
        Some(n.addr.as_str()),
        "a symmetric NAT shows another peer another address"
    );
    exchange(&mut n, &lone, "from-behind-a-symmetric-nat");
    // A public peer joins between them (its id after the NATed peer's, so
    // that its successor is the public one). The NATed peer, which knows
    // now that its NAT maps per destination, holds a reservation with the
    // bootstrap and sends through it: the public peer learns that it is
    // reached there, and its confirmation comes back the same way.
    let (n_id, l_id) = (n.id.clone(), lone.id.clone());
    let between = |id: &str| {
        if n_id < l_id {
            n_id.as_str() < id && id <= l_id.as_str()
        } else {
            id > n_id.as_str() || id <= l_id.as_str()
        }
    };
    let port = (41040..41100)
        .find(|p| between(&Hash::of(format!("{pub1}:{p}")).to_string()))
        .expect("a port whose id falls between");
    let x = start(
        &lab,
        "pub1",
        &format!("0.0.0.0:{port}"),
        Some(&lone.addr),
        &[],
    );
    let mark = n.len();
    n.cmd(&format!("send {} relayed-symmetric", x.addr));
    let sent = n.wait_for(mark, Duration::from_secs(10), is("sent"));
    assert!(
        x.wait_for(
            0,
            Duration::from_secs(5),
            recv_of("relayed-symmetric".into())
        )
        .is_some(),
        "{} never received the send from behind the symmetric NAT",
        x.addr
    );
    assert_eq!(x.all(recv_of("relayed-symmetric".into())).len(), 1);
    assert!(
        sent.as_ref().is_some_and(|v| v["ok"] == true),
        "the sender behind a symmetric NAT: {sent:?}"
    );
    assert_eq!(
        relay_of(&mut n).as_deref(),
        Some(lone.addr.as_str()),
        "the NATed peer is relayed by its bootstrap"
    );
    drop((n, lone, x));

    // A swarm inside LAN 1: peers joining by LAN address are seen, and
    // announce, their LAN addresses, and say they are public (seen at
    // their own address and port).
    let lan = [lab.ip("lan1-1").to_string(), lab.ip("lan1-2").to_string()];
    let mut local = vec![start(&lab, "lan1-2", "[::]:41030", None, &[])];
    let first_lan = format!("{}:41030", lan[1]);
    local.push(start(
        &lab,
        "lan1-1",
        "0.0.0.0:41031",
        Some(&first_lan),
        &[],
    ));
    local.push(start(&lab, "lan1-1", "[::]:41032", Some(&first_lan), &[]));
    assert!(local[0]
        .wait_for(0, Duration::from_secs(5), is("address"))
        .is_some());
    for n in local.iter_mut() {
        refresh(n);
    }
    let got: Vec<String> = local.iter().map(|n| n.addr.clone()).collect();
    let want = [
        format!("{}:41030", lan[1]),
        format!("{}:41031", lan[0]),
        format!("{}:41032", lan[0]),
    ];
    assert_eq!(got, want, "peers in a LAN announce their LAN addresses");
    for n in &local[1..] {
        let said = nat_event(n, Duration::from_secs(5), |v| v["status"] == "public");
        assert!(said.is_some(), "{}: {:?}", n.addr, n.all(is("nat")));
    }
    let all_lan: Vec<usize> = (0..local.len()).collect();
    wait_ring(&mut local, &all_lan, Duration::from_secs(30)).expect("the LAN ring");
    all_pairs(&mut local, &all_lan, &all_lan, "lan").expect("LAN pairs");
    drop(local);

    // An IPv6 swarm of dual-stack peers joining over IPv6: they announce
    // their IPv6 addresses. An IPv4-only peer cannot join it, and says so
    // at once.
    let (v6a, v6b) = (
        lab.var("PUB1_IP6").to_string(),
        lab.var("PUB2_IP6").to_string(),
    );
    let mut six = vec![start(&lab, "pub1", "[::]:41020", None, &[])];
    let first6 = format!("[{v6a}]:41020");
    six.push(start(&lab, "pub2", "[::]:41021", Some(&first6), &[]));
    six.push(start(&lab, "pub2", "[::]:41022", Some(&first6), &[]));
    six.push(start(
        &lab,
        "pub1",
        "[::]:41023",
        Some(&format!("[{v6b}]:41021")),
        &[],
    ));
    assert!(six[0]
        .wait_for(0, Duration::from_secs(5), is("address"))
        .is_some());
    for n in six.iter_mut() {
        refresh(n);
    }
    let want: Vec<String> = [(&v6a, 41020), (&v6b, 41021), (&v6b, 41022), (&v6a, 41023)]
        .iter()
        .map(|(ip, port)| format!("[{ip}]:{port}"))
        .collect();
    let got: Vec<String> = six.iter().map(|n| n.addr.clone()).collect();
    assert_eq!(
        got, want,
        "dual-stack peers joining over IPv6 announce IPv6"
    );
    let all6: Vec<usize> = (0..six.len()).collect();
    wait_ring(&mut six, &all6, Duration::from_secs(30)).expect("the IPv6 ring");
    all_pairs(&mut six, &all6, &all6, "v6").expect("IPv6 pairs");
    let v4only = node_in(
        &lab,
        "pub1",
        41024,
        &["--bind", "0.0.0.0:41024", "--join", &first6],
    );
    let err = v4only.wait_for(0, Duration::from_secs(20), is("error"));
    assert!(
        err.as_ref()
            .and_then(|v| v["message"].as_str())
            .is_some_and(|m| m.contains("cannot join") && m.contains("IPv4 and IPv6 do not mix")),
        "an IPv4-only peer joining an IPv6 swarm: {:?}",
        v4only.all(|_| true)
    );
}

/// `node` asks `target` where it sees it: the answer is `gw_ip`, and a
/// `nat` event follows with the mapping `mapping`.
fn observe_and_expect(node: &mut Node, target: &str, gw_ip: &str, mapping: &str) {
    let mark = node.len();
    node.cmd(&format!("observe {target}"));
    let obs = node.wait_for(mark, Duration::from_secs(10), is("observed"));
    assert_eq!(
        obs.as_ref()
            .map(|v| (v["ok"].clone(), ip_of(v["seen"].as_str().unwrap_or("")))),
        Some((Value::Bool(true), gw_ip.to_string())),
        "{}: {obs:?}",
        node.addr
    );
    let said = nat_event(node, Duration::from_secs(5), |v| {
        v["status"] == "nat" && v["mapping"] == mapping
    });
    assert!(
        said.is_some(),
        "{}: nat events {:?}",
        node.addr,
        node.all(is("nat"))
    );
}

/// `cicada demo --lab`: the demo brings up its own lab, spreads eight peers
/// over three public hosts and two LANs behind UPnP gateways, passes every
/// check, says where each peer sits, and leaves no namespace behind.
#[test]
fn demo_over_the_lab_places_peers_and_passes_its_checks() {
    let _g = heavy();
    let test = "demo_over_the_lab_places_peers_and_passes_its_checks";
    if require::or_skip(Need::Netlab, test, netlab::check("lab")).is_none() {
        return;
    }
    let script = netlab::script().display().to_string();
    let (code, out, err) = run_demo(
        &[
            "--lab", "--nodes", "8", "--json", "--seed", "5", "--netlab", &script,
        ],
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(0), "demo --lab\nstdout:\n{out}\nstderr:\n{err}");
    let last = out.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?}: {e}"));
    for (key, want) in [
        ("ok", Value::Bool(true)),
        ("ring_correct", Value::Bool(true)),
        ("lookup_success_rate", Value::from(1.0)),
        ("send_delivered_rate", Value::from(1.0)),
        ("broadcast_coverage", Value::from(1.0)),
        ("nodes", Value::from(8)),
    ] {
        assert_eq!(v[key], want, "{key}: {v}");
    }
    assert_eq!(v["after_churn"]["ring_correct"], true, "{v}");
    assert_eq!(v["after_churn"]["send_delivered_rate"], 1.0, "{v}");
    assert_eq!(v["nat"], "2 mapped, 6 public", "{v}");
    let peers = v["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 8, "{v}");
    let mut hosts: Vec<&str> = peers.iter().filter_map(|p| p["host"].as_str()).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts, ["lan1-1", "lan2-1", "pub1", "pub2", "pub3"], "{v}");
    for p in peers {
        let (host, addr) = (p["host"].as_str().unwrap(), p["addr"].as_str().unwrap());
        let (ip, nat) = match host {
            "lan1-1" => ("198.18.0.101".to_string(), "mapped"),
            "lan2-1" => ("198.18.0.102".to_string(), "mapped"),
            h => (format!("198.18.0.{}", &h[3..]), "public"),
        };
        assert_eq!(ip_of(addr), ip, "{p}");
        assert_eq!(p["nat"], nat, "{p}");
        assert_eq!(p["id"], Hash::of(addr).to_string(), "{p}");
    }
    let prefix = v["lab"].as_str().expect("the lab's prefix").to_string();
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with(&format!("{prefix}-"))),
        "the demo left namespaces of {prefix}: {left}"
    );
}

/// The `peers` event of `node` now: each peer's address and path.
fn paths_of(node: &mut Node) -> Vec<(String, String)> {
    let mark = node.len();
    node.cmd("peers");
    let v = node
        .wait_for(mark, Duration::from_secs(5), is("peers"))
        .unwrap_or_else(|| panic!("{}: no peers event", node.addr));
    v["peers"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|p| {
                    let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                    (s("addr"), s("path"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `stats` event of `node` now.
fn stats_of(node: &mut Node) -> Value {
    let mark = node.len();
    node.cmd("stats");
    node.wait_for(mark, Duration::from_secs(5), is("stats"))
        .unwrap_or_else(|| panic!("{}: no stats event", node.addr))
}

/// The UDP flows gateway `gw` tracks (its conntrack table), one per line.
fn flows(lab: &Lab, gw: &str) -> String {
    let out = lab
        .exec(gw)
        .args(["cat", "/proc/net/nf_conntrack"])
        .output()
        .expect("read the gateway's conntrack table");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The punchable cells of the NAT matrix. A public bootstrap on pub1, A
/// behind gw1 and B behind gw2, both endpoint-independent NATs without
/// any mapping service: B, joining, finds A as its successor and cannot
/// reach it; the bootstrap introduces them and they punch a direct path
/// between their NATs' external addresses (seen in gw1's flow table, and
/// reported `punched` by both), and their sends to each other are
/// confirmed and arrive once.
/// Then a public peer on pub2 and a peer behind gw3 with a UPnP mapping
/// (`--map`) join: all five reach each other, every pair confirmed.
#[test]
fn peers_behind_two_eim_nats_punch_a_direct_path() {
    let _g = heavy();
    let knobs = [
        ("NETLAB_PUBLIC", "2"),
        ("NETLAB_LANS", "3"),
        ("NETLAB_HOSTS", "1"),
        ("NETLAB_NAT", "eim"),
        ("NETLAB_UPNP", "no"),
        ("NETLAB_NATPMP", "no"),
        ("NETLAB_GW3_UPNP", "yes"),
    ];
    let Some(lab) = Lab::up("punch_eim", &knobs) else {
        return;
    };
    let (pub1, gw1, gw2) = (lab.ip("pub1"), lab.ip("gw1"), lab.ip("gw2"));
    let first = format!("{pub1}:42001");
    let mut nodes = vec![start(&lab, "pub1", "0.0.0.0:42001", None, &[])];
    nodes.push(start(&lab, "lan1-1", "0.0.0.0:42002", Some(&first), &[]));
    nodes.push(start(&lab, "lan2-1", "0.0.0.0:42003", Some(&first), &[]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[0].all(is("address")).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    for n in nodes.iter_mut() {
        refresh(n);
    }
    let (a, b) = (format!("{gw1}:42002"), format!("{gw2}:42003"));
    assert_eq!(nodes[1].addr, a, "A announces its NAT's mapping");
    assert_eq!(nodes[2].addr, b, "B announces its NAT's mapping");
    let three: Vec<usize> = (0..3).collect();
    wait_ring(&mut nodes, &three, Duration::from_secs(30)).expect("the ring of three");
    all_pairs(&mut nodes, &[1, 2], &[1, 2], "eim-eim").expect("A and B reach each other");
    all_pairs(&mut nodes, &three, &three, "three").expect("all pairs of three");

    // The datagrams between A and B go straight between the NATs: gw1
    // tracks a flow from A to B's external address that saw answers.
    let lan11 = lab.ip("lan1-1");
    let direct = format!("src={lan11} dst={gw2} sport=42002 dport=42003 ");
    let table = flows(&lab, "gw1");
    let flow = table.lines().find(|l| l.contains(&direct));
    assert!(
        flow.is_some_and(|l| !l.contains("UNREPLIED")),
        "no answered flow {direct}in gw1's table:\n{table}"
    );
    let (pa, pb) = (paths_of(&mut nodes[1]), paths_of(&mut nodes[2]));
    let (sa, sb) = (stats_of(&mut nodes[1]), stats_of(&mut nodes[2]));
    eprintln!(
        "A's paths {pa:?}\nB's paths {pb:?}\nA punches started {} succeeded {} answered {}; B {} {} {}",
        sa["punches_started"],
        sa["punches_succeeded"],
        sa["punches_answered"],
        sb["punches_started"],
        sb["punches_succeeded"],
        sb["punches_answered"]
    );
    // B's successor is A (the ids are the hashes of these fixed
    // addresses): B's joining stabilize to A goes unanswered, so B asks
    // the bootstrap to introduce it, and both sides report the punch.
    for (paths, other) in [(&pa, &b), (&pb, &a)] {
        let path = paths.iter().find(|(addr, _)| addr == other);
        assert!(
            path.is_some_and(|(_, p)| p == "punched"),
            "{other} in {paths:?}"
        );
    }
    assert!(sb["punches_succeeded"].as_u64() >= Some(1), "{sb}");
    assert!(sa["punches_answered"].as_u64() >= Some(1), "{sa}");
    for (addr, path) in pa.iter().chain(&pb) {
        assert!(
            ["direct", "punched"].contains(&path.as_str()),
            "{addr}: {path}"
        );
    }

    // Public x NAT and UPnP x NAT: a public peer and a mapped one join.
    let second = format!("{}:42004", lab.ip("pub2"));
    nodes.push(start(&lab, "pub2", "0.0.0.0:42004", Some(&first), &[]));
    nodes.push(start(
        &lab,
        "lan3-1",
        "0.0.0.0:42005",
        Some(&second),
        &["--map"],
    ));
    assert_eq!(ip_of(&nodes[4].addr), lab.ip("gw3"), "the mapped peer");
    let five: Vec<usize> = (0..5).collect();
    wait_ring(&mut nodes, &five, Duration::from_secs(30)).expect("the ring of five");
    all_pairs(&mut nodes, &five, &five, "five").expect("all pairs of five");
    let mut punched = 0;
    for node in nodes.iter_mut() {
        let s = stats_of(node);
        let n = s["punches_succeeded"].as_u64().unwrap_or(0);
        punched += n;
        let paths = paths_of(node);
        eprintln!(
            "{}: punches started {} succeeded {n} failed {} introduced {} answered {}; paths {:?}",
            node.addr,
            s["punches_started"],
            s["punches_failed"],
            s["punches_introduced"],
            s["punches_answered"],
            paths
        );
    }
    eprintln!("punches that opened a path: {punched}");
}

/// A swarm of nine over two public hosts (five peers) and four LANs
/// behind endpoint-independent NATs without mapping (one peer each: two
/// behind one NAT would need its gateway to hairpin, which it does not),
/// each joining through a public peer: the ring is correct, all 72 pairs'
/// sends are confirmed and arrive once, and a broadcast from behind a NAT
/// reaches every other peer once. Peers that must reach a NATed peer first
/// punch (through the ring) to do it.
#[test]
fn a_swarm_with_peers_behind_eim_nats_is_whole() {
    let _g = heavy();
    let knobs = [
        ("NETLAB_PUBLIC", "2"),
        ("NETLAB_LANS", "4"),
        ("NETLAB_HOSTS", "1"),
        ("NETLAB_NAT", "eim"),
        ("NETLAB_UPNP", "no"),
        ("NETLAB_NATPMP", "no"),
    ];
    let Some(lab) = Lab::up("punch_swarm", &knobs) else {
        return;
    };
    let (pub1, pub2) = (lab.ip("pub1"), lab.ip("pub2"));
    let first = format!("{pub1}:43001");
    let second = format!("{pub2}:43004");
    let plan: [(&str, &str, Option<&str>); 9] = [
        ("pub1", "0.0.0.0:43001", None),
        ("pub1", "0.0.0.0:43002", Some(&first)),
        ("pub1", "0.0.0.0:43003", Some(&first)),
        ("pub2", "0.0.0.0:43004", Some(&first)),
        ("pub2", "0.0.0.0:43005", Some(&second)),
        ("lan1-1", "0.0.0.0:43006", Some(&first)),
        ("lan2-1", "0.0.0.0:43007", Some(&second)),
        ("lan3-1", "0.0.0.0:43008", Some(&first)),
        ("lan4-1", "0.0.0.0:43009", Some(&second)),
    ];
    let mut nodes: Vec<Node> = Vec::new();
    for (role, bind, join) in plan {
        nodes.push(start(&lab, role, bind, join, &[]));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[0].all(is("address")).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    for n in nodes.iter_mut() {
        refresh(n);
    }
    for (k, n) in nodes[5..].iter().enumerate() {
        let gw = format!("gw{}", k + 1);
        assert_eq!(
            ip_of(&n.addr),
            lab.ip(&gw),
            "{gw}: a NATed peer announces its mapping"
        );
    }
    let all: Vec<usize> = (0..nodes.len()).collect();
    wait_ring(&mut nodes, &all, Duration::from_secs(40)).expect("the ring of nine");
    all_pairs(&mut nodes, &all, &all, "swarm").expect("all 72 pairs");
    broadcast_reaches_all(&mut nodes, &all, 8, "bcast-from-lan4");
    let mut punched = 0;
    for node in nodes.iter_mut() {
        let s = stats_of(node);
        punched += s["punches_succeeded"].as_u64().unwrap_or(0);
    }
    eprintln!("punches that opened a path in the swarm of nine: {punched}");
    assert!(punched >= 1, "nobody needed a punch");
}

/// The address of the peer `node` reaches straight while every other one
/// is relayed: a relayed node's own relay.
fn relay_of(node: &mut Node) -> Option<String> {
    let paths = paths_of(node);
    let direct: Vec<&(String, String)> = paths.iter().filter(|(_, p)| p == "direct").collect();
    let relayed = paths.iter().filter(|(_, p)| p == "relayed").count();
    (direct.len() == 1 && relayed + 1 == paths.len()).then(|| direct[0].0.clone())
}

/// Waits until `node` is reached through a relay other than `not`.
fn wait_relay(node: &mut Node, not: Option<&str>, within: Duration) -> Option<String> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Some(r) = relay_of(node).filter(|r| Some(r.as_str()) != not) {
            return Some(r);
        }
        thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The relayed cells of the NAT matrix: A behind gw1 and B behind gw2,
/// both symmetric NATs without any mapping service, C behind gw3, an
/// endpoint-independent one, and three public peers on pub1 and pub2. A
/// and B learn how their NATs map (by observing a peer on the other
/// public host) and each holds a reservation with a public peer; the ring
/// of six is correct, and A's, B's and C's sends to each other (and all
/// pairs') are confirmed and arrive exactly once, A and B reporting each
/// other `relayed`. Then A's relay is killed: A holds a reservation with
/// another public peer, the ring of five heals, and all pairs' sends are
/// confirmed and arrive once again.
#[test]
fn peers_behind_symmetric_nats_reach_each_other_through_a_relay() {
    relayed_cells("relay_symmetric", None);
}

/// The same in a keyed swarm: every peer holds the swarm key, and the
/// relays carry datagrams sealed end to end.
#[test]
fn peers_behind_symmetric_nats_reach_each_other_through_a_relay_in_a_keyed_swarm() {
    let dir = std::env::temp_dir().join(format!("cicada-relay-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    SwarmKey::generate().unwrap().write_file(&key).unwrap();
    relayed_cells("relay_keyed", Some(key.to_str().unwrap()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The test of the relayed cells, in a lab named `name`, every peer with
/// the swarm key file `key` if given.
fn relayed_cells(name: &str, key: Option<&str>) {
    let _g = heavy();
    let extra: Vec<&str> = key.map(|k| vec!["--swarm-key", k]).unwrap_or_default();
    let extra = &extra[..];
    let knobs = [
        ("NETLAB_PUBLIC", "2"),
        ("NETLAB_LANS", "3"),
        ("NETLAB_HOSTS", "1"),
        ("NETLAB_NAT", "symmetric"),
        ("NETLAB_GW3_NAT", "eim"),
        ("NETLAB_UPNP", "no"),
        ("NETLAB_NATPMP", "no"),
    ];
    let Some(lab) = Lab::up(name, &knobs) else {
        return;
    };
    let (pub1, pub2) = (lab.ip("pub1"), lab.ip("pub2"));
    let (gw1, gw2) = (lab.ip("gw1"), lab.ip("gw2"));
    let first = format!("{pub1}:44001");
    let second = format!("{pub2}:44002");
    let mut nodes = vec![start(&lab, "pub1", "0.0.0.0:44001", None, extra)];
    nodes.push(start(&lab, "pub2", "0.0.0.0:44002", Some(&first), extra));
    nodes.push(start(&lab, "pub1", "0.0.0.0:44003", Some(&first), extra));
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[0].all(is("address")).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    refresh(&mut nodes[0]);
    // A, then B: each learns that its NAT maps per destination, and holds
    // a reservation with a public peer.
    for (role, bind, gw) in [
        ("lan1-1", "0.0.0.0:44004", &gw1),
        ("lan2-1", "0.0.0.0:44005", &gw2),
    ] {
        let mut n = start(&lab, role, bind, Some(&first), extra);
        observe_and_expect(&mut n, &second, gw, "address-dependent");
        let relay = wait_relay(&mut n, None, Duration::from_secs(10));
        assert!(
            relay.is_some(),
            "{role}: no relay; paths {:?}",
            paths_of(&mut n)
        );
        nodes.push(n);
    }
    // C, behind an endpoint-independent NAT.
    nodes.push(start(&lab, "lan3-1", "0.0.0.0:44006", Some(&second), extra));
    for n in nodes.iter_mut() {
        refresh(n);
    }
    let six: Vec<usize> = (0..6).collect();
    wait_ring(&mut nodes, &six, Duration::from_secs(30)).expect("the ring of six");
    all_pairs(&mut nodes, &[3, 4], &[3, 4], "sym-sym").expect("A and B reach each other");
    all_pairs(&mut nodes, &[3, 4, 5], &[3, 4, 5], "sym-eim").expect("A, B and C");
    all_pairs(&mut nodes, &six, &six, "six").expect("all pairs of six");
    let (a, b) = (nodes[3].addr.clone(), nodes[4].addr.clone());
    // A and B reach every peer through a relay but their own; the NATed
    // peers reach them through one; a public peer reaches them through
    // one, or straight where it relays for them (it holds a place for
    // their relay's reservation, or for a frame they sent through it).
    let relays: Vec<String> = [3, 4]
        .iter()
        .map(|&i| relay_of(&mut nodes[i]).expect("a relay"))
        .collect();
    let mut seen = 0;
    for (i, node) in nodes.iter_mut().enumerate() {
        let me = node.addr.clone();
        for (addr, path) in paths_of(node) {
            for (k, x) in [&a, &b].into_iter().enumerate() {
                if addr == *x {
                    seen += 1;
                    let want: &[&str] = if relays[k] == me {
                        &["direct"]
                    } else if i >= 3 {
                        &["relayed"]
                    } else {
                        &["relayed", "direct"]
                    };
                    assert!(want.contains(&path.as_str()), "{me}'s path to {x}: {path}");
                }
            }
        }
    }
    assert!(seen >= 2, "nobody holds A or B in its routing state");
    eprintln!(
        "A {a} relayed by {}, B {b} relayed by {}",
        relays[0], relays[1]
    );

    // A's relay goes: A moves to another public peer.
    let dead = nodes
        .iter()
        .position(|n| n.addr == relays[0])
        .expect("A's relay is a member");
    nodes[dead].kill();
    let killed = Instant::now();
    let moved = wait_relay(&mut nodes[3], Some(&relays[0]), Duration::from_secs(10));
    let took = killed.elapsed();
    assert!(
        moved.is_some(),
        "A found no other relay: {:?}",
        paths_of(&mut nodes[3])
    );
    eprintln!("A moved to {moved:?} {took:?} after its relay was killed");
    let live: Vec<usize> = six.iter().copied().filter(|&i| i != dead).collect();
    wait_ring(&mut nodes, &live, Duration::from_secs(30)).expect("the ring of five");
    all_pairs(&mut nodes, &[3, 4], &[3, 4], "after").expect("A and B after the kill");
    all_pairs(&mut nodes, &live, &live, "five").expect("all pairs of five");
    for &i in &live {
        let s = stats_of(&mut nodes[i]);
        eprintln!(
            "{}: relay reservations {} lost {} frames {} bytes {} dropped {} refused {}; punches relayed {}",
            nodes[i].addr,
            s["relay"]["reservations"],
            s["relay"]["lost"],
            s["relay"]["frames"],
            s["relay"]["bytes"],
            s["relay"]["dropped"],
            s["relay"]["refused"],
            s["relay"]["punches_relayed"]
        );
    }
}

/// Where a peer of the NAT matrix sits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// On a public host.
    Public,
    /// Behind a NAT with UPnP/NAT-PMP, its port mapped (`--map`).
    Mapped,
    /// Behind an endpoint-independent NAT without any mapping service.
    Eim,
    /// Behind a symmetric NAT without any mapping service.
    Symmetric,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Public, Kind::Mapped, Kind::Eim, Kind::Symmetric];

    /// The host of the first (A) or second (B) peer of this kind in the
    /// matrix's lab: two of each kind, so that a cell of one kind puts its
    /// peers behind two different gateways.
    fn host(self, second: bool) -> &'static str {
        let i = usize::from(second);
        match self {
            Kind::Public => ["pub1", "pub2"][i],
            Kind::Mapped => ["lan1-1", "lan2-1"][i],
            Kind::Eim => ["lan3-1", "lan4-1"][i],
            Kind::Symmetric => ["lan5-1", "lan6-1"][i],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Public => "public",
            Kind::Mapped => "mapped",
            Kind::Eim => "EIM",
            Kind::Symmetric => "symmetric",
        }
    }
}

/// The path A and B of a cell report for each other, where A joins first
/// and B, joining, needs A first (A is B's successor): relayed if either
/// sits behind a symmetric NAT (nobody can punch it); punched if A sits
/// behind an endpoint-independent NAT (it has not sent to B, so its NAT
/// lets B in only through a punch); direct otherwise (A is public or
/// mapped, and B has sent to A before A needs B).
fn expected_path(a: Kind, b: Kind) -> &'static str {
    match (a, b) {
        (Kind::Symmetric, _) | (_, Kind::Symmetric) => "relayed",
        (Kind::Eim, _) => "punched",
        _ => "direct",
    }
}

/// The whole NAT matrix in one lab: A and B each public (pub1, pub2),
/// mapped (behind gw1, gw2, UPnP/NAT-PMP, `--map`), behind an
/// endpoint-independent NAT without mapping (gw3, gw4) or behind a
/// symmetric one (gw5, gw6). Each of the 16 ordered cells is a swarm of
/// four: a public bootstrap on pub1, a public peer on pub2, A, then B,
/// neither of which relays (so that a symmetric peer's relay is one of
/// the two public peers). A's and B's sends to each other are confirmed
/// and arrive exactly once, and each reports the other's path as
/// `expected_path` says. Where B's address can be told in advance (it is
/// not behind a symmetric NAT), its port is chosen so that A is its
/// successor: B needs A first. One cell is run the other way round:
/// EIM x symmetric, where the symmetric peer joins first (joining second,
/// before it knows how its NAT maps, it cannot reach an EIM successor,
/// and its join times out: docs/nat.md). Every cell is run and reported
/// before the test fails on any.
#[test]
fn the_nat_matrix_connects_every_pair_on_the_expected_path() {
    let _g = heavy();
    let knobs = [
        ("NETLAB_PUBLIC", "2"),
        ("NETLAB_LANS", "6"),
        ("NETLAB_HOSTS", "1"),
        ("NETLAB_NAT", "eim"),
        ("NETLAB_UPNP", "no"),
        ("NETLAB_NATPMP", "no"),
        ("NETLAB_GW1_UPNP", "yes"),
        ("NETLAB_GW1_NATPMP", "yes"),
        ("NETLAB_GW2_UPNP", "yes"),
        ("NETLAB_GW2_NATPMP", "yes"),
        ("NETLAB_GW5_NAT", "symmetric"),
        ("NETLAB_GW6_NAT", "symmetric"),
    ];
    let Some(lab) = Lab::up("nat_matrix", &knobs) else {
        return;
    };
    let started = Instant::now();
    let mut cells = Vec::new();
    for a in Kind::ALL {
        for b in Kind::ALL {
            cells.push((a, b));
        }
    }
    let mut table = Vec::new();
    let mut wrong = Vec::new();
    for (c, &(a, b)) in cells.iter().enumerate() {
        let t = Instant::now();
        let base = 46000 + 100 * c as u16;
        // The known limit: the symmetric peer joins first.
        let swapped = (a, b) == (Kind::Eim, Kind::Symmetric);
        let (outcome, ok) = if swapped {
            matrix_cell(&lab, b, a, base)
        } else {
            matrix_cell(&lab, a, b, base)
        };
        let line = format!(
            "{:>9} x {:<9} {}{outcome} ({:.1} s)",
            a.name(),
            b.name(),
            if swapped { "(B joined first) " } else { "" },
            t.elapsed().as_secs_f64()
        );
        eprintln!("matrix: {line}");
        if !ok {
            wrong.push(line.clone());
        }
        table.push(line);
    }
    eprintln!(
        "the NAT matrix in {:.1} s:\n{}",
        started.elapsed().as_secs_f64(),
        table.join("\n")
    );
    assert!(wrong.is_empty(), "cells that failed:\n{}", wrong.join("\n"));
}

/// The address a peer of `kind` bound to port `port` of `role` announces,
/// where it can be told in advance (not behind a symmetric NAT).
fn predicted(lab: &Lab, kind: Kind, role: &str, port: u16) -> Option<String> {
    let ip = match kind {
        Kind::Public => lab.ip(role),
        Kind::Mapped | Kind::Eim => lab.ip(&format!("gw{}", &role[3..4])),
        Kind::Symmetric => return None,
    };
    Some(format!("{ip}:{port}"))
}

/// Starts the cell's peer of `kind` in `role` on `port`, joining through
/// `join`, and waits until it knows where it stands: mapped, its NAT's
/// mapping observed from `observer` (a peer on the other public host),
/// relayed behind a symmetric NAT.
fn matrix_peer(lab: &Lab, kind: Kind, role: &str, port: u16, join: &str, observer: &str) -> Node {
    let bind = format!("0.0.0.0:{port}");
    let mut extra = vec!["--no-relay"];
    if kind == Kind::Mapped {
        extra.push("--map");
    }
    let mut n = start(lab, role, &bind, Some(join), &extra);
    let gw = format!("gw{}", &role[3..4]);
    match kind {
        Kind::Public => {}
        Kind::Mapped => {
            let said = nat_event(&n, Duration::from_secs(5), |v| v["status"] == "mapped");
            assert!(said.is_some(), "{role}: {:?}", n.all(is("nat")));
        }
        Kind::Eim => observe_and_expect(&mut n, observer, lab.ip(&gw), "endpoint-independent"),
        Kind::Symmetric => {
            observe_and_expect(&mut n, observer, lab.ip(&gw), "address-dependent");
            let relay = wait_relay(&mut n, None, Duration::from_secs(10));
            assert!(
                relay.is_some(),
                "{role}: no relay; paths {:?}",
                paths_of(&mut n)
            );
        }
    }
    if kind != Kind::Public {
        assert_eq!(
            ip_of(&n.addr),
            lab.ip(&gw),
            "{role} announces its gateway's address"
        );
    }
    n
}

/// One cell of the NAT matrix: a swarm of four on ports from `base`.
/// Returns what happened and whether it is what the matrix expects.
fn matrix_cell(lab: &Lab, a: Kind, b: Kind, base: u16) -> (String, bool) {
    let (pub1, pub2) = (lab.ip("pub1"), lab.ip("pub2"));
    let first = format!("{pub1}:{base}");
    let second = format!("{pub2}:{}", base + 1);
    let mut nodes = vec![start(lab, "pub1", &format!("0.0.0.0:{base}"), None, &[])];
    nodes.push(start(
        lab,
        "pub2",
        &format!("0.0.0.0:{}", base + 1),
        Some(&first),
        &[],
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[0].all(is("address")).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    refresh(&mut nodes[0]);
    let (role_a, role_b) = (a.host(false), b.host(true));
    let mut node_a = matrix_peer(lab, a, role_a, base + 2, &first, &second);
    refresh(&mut node_a);
    // B's port: one that makes A its successor, where B's address (and so
    // its id) can be told in advance and such a port is found.
    let ids: Vec<String> = [&nodes[0].addr, &nodes[1].addr, &node_a.addr]
        .iter()
        .map(|x| Hash::of(x.as_str()).to_string())
        .collect();
    let id_a = ids[2].clone();
    let successor_is_a = |id: &str| {
        let after = ids
            .iter()
            .filter(|m| m.as_str() > id)
            .min()
            .or_else(|| ids.iter().min())
            .cloned();
        after.as_deref() == Some(id_a.as_str())
    };
    let port_b = (base + 10..base + 100)
        .find(|&p| match predicted(lab, b, role_b, p) {
            Some(x) => successor_is_a(&Hash::of(&x).to_string()),
            None => true,
        })
        // With A behind a symmetric NAT its id falls anywhere, and the arc
        // before it may hold none of these ports; the path is relayed
        // whoever needs whom first.
        .or((a == Kind::Symmetric).then_some(base + 10))
        .expect("a port for B whose successor is A");
    let node_b = matrix_peer(lab, b, role_b, port_b, &first, &second);
    nodes.push(node_a);
    nodes.push(node_b);
    for n in nodes.iter_mut() {
        refresh(n);
    }
    let four: Vec<usize> = (0..4).collect();
    if let Err(e) = wait_ring(&mut nodes, &four, Duration::from_secs(30)) {
        return (format!("no ring: {e}"), false);
    }
    if let Err(e) = all_pairs(&mut nodes, &[2, 3], &[2, 3], "cell") {
        return (format!("sends: {e}"), false);
    }
    // The paths settle once a punch or a relay route is in place: ask
    // until both say what the matrix expects, for a few seconds.
    let want = expected_path(a, b);
    let (addr_a, addr_b) = (nodes[2].addr.clone(), nodes[3].addr.clone());
    let path_to = |node: &mut Node, other: &str| {
        paths_of(node)
            .into_iter()
            .find(|(addr, _)| addr == other)
            .map(|(_, p)| p)
            .unwrap_or_else(|| "absent".into())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let (ab, ba) = loop {
        let ab = path_to(&mut nodes[2], &addr_b);
        let ba = path_to(&mut nodes[3], &addr_a);
        if (ab == want && ba == want) || Instant::now() >= deadline {
            break (ab, ba);
        }
        thread::sleep(Duration::from_millis(200));
    };
    let ok = ab == want && ba == want;
    // Sends both ways once more, on the path now reported.
    if let Err(e) = all_pairs(&mut nodes, &[2, 3], &[2, 3], "again") {
        return (format!("A->B {ab}, B->A {ba}; sends after: {e}"), false);
    }
    let punches: Vec<String> = [2, 3]
        .iter()
        .map(|&i| {
            let s = stats_of(&mut nodes[i]);
            format!("{}/{}", s["punches_started"], s["punches_succeeded"])
        })
        .collect();
    (
        format!(
            "sends confirmed, each once; A reports B {ab}, B reports A {ba} (want {want}); \
             punches started/succeeded A {} B {}",
            punches[0], punches[1]
        ),
        ok,
    )
}
