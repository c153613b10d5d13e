use super::*;

fn env(https: Option<&str>, http: Option<&str>, all: Option<&str>, no: Option<&str>) -> ProxyEnv {
    ProxyEnv {
        https: https.map(str::to_owned),
        http: http.map(str::to_owned),
        all: all.map(str::to_owned),
        no_proxy: no.map(str::to_owned),
    }
}

fn route(e: &ProxyEnv, server: &str) -> ProxyRoute {
    let url = crate::ServerUrl::parse(server).unwrap();
    ProxyRoute::choose(e, url.is_tls(), url.host()).unwrap()
}

#[test]
fn the_schemes_own_proxy_wins_then_all_proxy() {
    let e = env(
        Some("http://s:1"),
        Some("http://p:2"),
        Some("http://a:3"),
        None,
    );
    let via = |r: ProxyRoute| match r {
        ProxyRoute::Via(p) => (p.host, p.port),
        other => panic!("{other:?}"),
    };
    assert_eq!(via(route(&e, "wss://rmm.example.com")), ("s".into(), 1));
    assert_eq!(via(route(&e, "ws://rmm.example.com")), ("p".into(), 2));
    let only_all = env(None, None, Some("a:3"), None);
    assert_eq!(via(route(&only_all, "wss://h")), ("a".into(), 3));
    assert_eq!(via(route(&only_all, "ws://h")), ("a".into(), 3));
    let https_only = env(Some("http://s:1"), None, None, None);
    assert_eq!(route(&https_only, "ws://h"), ProxyRoute::Direct);
    assert_eq!(route(&ProxyEnv::default(), "wss://h"), ProxyRoute::Direct);
}

#[test]
fn no_proxy_follows_curls_rules() {
    let exempt = |list: &str, server: &str| {
        matches!(
            route(
                &env(Some("http://p:1"), Some("http://p:1"), None, Some(list)),
                server
            ),
            ProxyRoute::Exempt(_)
        )
    };
    assert!(exempt("*", "wss://anything.example"));
    assert!(exempt("rmm.example.com", "wss://rmm.example.com"));
    assert!(exempt("RMM.Example.com", "wss://rmm.example.com:8443"));
    assert!(exempt("example.com", "wss://rmm.example.com"));
    assert!(exempt(".example.com", "wss://rmm.example.com"));
    assert!(exempt("other.org, example.com", "wss://rmm.example.com"));
    assert!(exempt("10.0.0.5", "ws://10.0.0.5:8080"));
    assert!(exempt("::1", "ws://[::1]:8080"));
    assert!(exempt("[::1]", "ws://[::1]:8080"));
    assert!(exempt("127.0.0.1:9999", "ws://127.0.0.1:8080"));
    assert!(!exempt("ample.com", "wss://rmm.example.com"));
    assert!(!exempt("rmm.example.com.evil", "wss://rmm.example.com"));
    assert!(!exempt("10.0.0.5", "ws://10.0.0.50"));
    assert!(!exempt("", "wss://h"));
    assert!(!exempt(".", "wss://h"));
    assert_eq!(
        route(
            &env(Some("http://p:1"), None, None, Some("x, .example.com")),
            "wss://a.example.com"
        ),
        ProxyRoute::Exempt(".example.com".into())
    );
}

#[test]
fn proxy_urls_parse_with_credentials_that_are_never_shown() {
    let p = ProxyUrl::parse("http://bob:pa%3Ass@proxy.corp:3128/").unwrap();
    assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
    // base64("bob:pa:ss")
    assert_eq!(p.authorization.as_deref(), Some("Basic Ym9iOnBhOnNz"));
    assert_eq!(p.to_string(), "http://bob:***@proxy.corp:3128");
    assert!(!format!("{p:?}").contains("pa%3Ass"));
    let p = ProxyUrl::parse("proxy.corp").unwrap();
    assert_eq!((p.port, p.authorization), (1080, None));
    let p = ProxyUrl::parse("http://[::1]:8888").unwrap();
    assert_eq!((p.host.as_str(), p.port), ("::1", 8888));
    assert!(matches!(
        ProxyUrl::parse("https://p:1"),
        Err(ProxyError::Scheme(_))
    ));
    assert!(matches!(
        ProxyUrl::parse("socks5://p:1"),
        Err(ProxyError::Scheme(_))
    ));
    assert!(matches!(
        ProxyUrl::parse("http://:1"),
        Err(ProxyError::BadUrl(_))
    ));
    assert!(matches!(
        ProxyUrl::parse("http://p:x"),
        Err(ProxyError::BadUrl(_))
    ));
    let e = ProxyUrl::parse("http://u:hunter2@p:x")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
    let debug = format!("{:?}", env(Some("http://u:hunter2@p:1"), None, None, None));
    assert!(!debug.contains("hunter2"), "{debug}");
}
