#![allow(clippy::unwrap_used)]

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn proxies(s: &str) -> TrustedProxies {
    s.parse().unwrap()
}

#[test]
fn lists_of_addresses_and_ranges_parse_and_bad_items_are_named() {
    let p = proxies(" 10.0.0.0/8, 127.0.0.1 ,::1, fd00::/8 ");
    assert_eq!(p.to_string(), "10.0.0.0/8,127.0.0.1/32,::1/128,fd00::/8");
    assert!(proxies("").is_empty());
    assert!(proxies(" , ").is_empty());
    for bad in [
        "10.0.0.0/33",
        "::/129",
        "nginx",
        "10.0.0.1/x",
        "10.0.0.0/8/1",
    ] {
        let e = bad.parse::<TrustedProxies>().unwrap_err();
        assert_eq!(e, InvalidProxy(bad.to_owned()), "{bad}");
        assert!(e.to_string().contains("CIDR"), "{e}");
    }
}

#[test]
fn ranges_contain_their_addresses_only() {
    let p = proxies("10.0.0.0/8,192.168.1.7,fd00::/8");
    for inside in [
        "10.0.0.1",
        "10.255.255.255",
        "192.168.1.7",
        "fd12::1",
        "::ffff:10.1.2.3",
    ] {
        assert!(p.contains(ip(inside)), "{inside}");
    }
    for outside in ["11.0.0.1", "192.168.1.8", "fe80::1", "127.0.0.1", "::1"] {
        assert!(!p.contains(ip(outside)), "{outside}");
    }
    assert!(proxies("0.0.0.0/0").contains(ip("203.0.113.7")));
    assert!(!proxies("0.0.0.0/0").contains(ip("2001:db8::1")));
}

#[test]
fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
    let p = proxies("10.0.0.0/8");
    assert_eq!(
        p.client_addr(ip("198.51.100.4"), ["203.0.113.7"]),
        ip("198.51.100.4")
    );
    assert_eq!(
        TrustedProxies::default().client_addr(ip("127.0.0.1"), ["203.0.113.7, 127.0.0.1"]),
        ip("127.0.0.1")
    );
}

#[test]
fn behind_a_trusted_proxy_the_right_most_untrusted_entry_is_the_client() {
    let p = proxies("127.0.0.1,10.0.0.0/8");
    // The client sent its own X-Forwarded-For; the proxy appended the real address.
    assert_eq!(
        p.client_addr(ip("127.0.0.1"), ["203.0.113.7, 198.51.100.4"]),
        ip("198.51.100.4")
    );
    // Trusted hops on the right are skipped.
    assert_eq!(
        p.client_addr(ip("127.0.0.1"), ["203.0.113.7, 198.51.100.4, 10.1.1.1"]),
        ip("198.51.100.4")
    );
    // Several headers read as one list, in order.
    assert_eq!(
        p.client_addr(ip("10.0.0.2"), ["203.0.113.7", "198.51.100.4"]),
        ip("198.51.100.4")
    );
    // Ports and brackets are tolerated.
    assert_eq!(
        p.client_addr(ip("127.0.0.1"), ["198.51.100.4:5555"]),
        ip("198.51.100.4")
    );
    assert_eq!(
        p.client_addr(ip("127.0.0.1"), ["[2001:db8::5]:443"]),
        ip("2001:db8::5")
    );
    assert_eq!(
        p.client_addr(ip("127.0.0.1"), ["[2001:db8::5]"]),
        ip("2001:db8::5")
    );
}

#[test]
fn without_a_usable_entry_the_last_trusted_hop_is_the_client() {
    let p = proxies("127.0.0.1,10.0.0.0/8");
    assert_eq!(p.client_addr(ip("127.0.0.1"), []), ip("127.0.0.1"));
    assert_eq!(
        p.client_addr(ip("127.0.0.1"), ["203.0.113.7, garbage, 10.0.0.9"]),
        ip("10.0.0.9")
    );
    assert_eq!(p.client_addr(ip("127.0.0.1"), ["unknown"]), ip("127.0.0.1"));
    assert_eq!(
        p.client_addr(ip("127.0.0.1"), ["10.0.0.8, 10.0.0.9"]),
        ip("10.0.0.8")
    );
}

#[test]
fn mapped_ipv4_peers_are_matched_and_reported_as_ipv4() {
    let p = proxies("127.0.0.1");
    assert_eq!(
        p.client_addr(ip("::ffff:127.0.0.1"), ["203.0.113.7"]),
        ip("203.0.113.7")
    );
    assert_eq!(
        TrustedProxies::default().client_addr(ip("::ffff:198.51.100.4"), []),
        ip("198.51.100.4")
    );
}

#[test]
fn a_request_yields_its_peer_or_its_forwarded_client() {
    let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let (parts, ()) = poem::http::Request::builder()
        .header("x-forwarded-for", "203.0.113.7, 198.51.100.4")
        .body(())
        .unwrap()
        .into_parts();
    let parts = poem::RequestParts::from((
        parts,
        poem::web::LocalAddr::default(),
        poem::web::RemoteAddr(poem::Addr::SocketAddr(peer)),
        poem::http::uri::Scheme::HTTP,
    ));
    let req = Request::from_parts(parts, poem::Body::empty());
    assert_eq!(
        proxies("127.0.0.0/8").of_request(&req),
        Some(ip("198.51.100.4"))
    );
    assert_eq!(
        TrustedProxies::default().of_request(&req),
        Some(ip("127.0.0.1"))
    );
}
