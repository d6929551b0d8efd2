//! Source-IP allowlists on every path in: 443 terminate, 443 passthrough, CONNECT; with
//! and without PROXY headers (v1, v2), over IPv4 and IPv6; revocation of open streams.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use apigate_control::access::{AccessControlSpec, GardenerAclConfig, RuleSpec};
use apigate_control::model::{ListenerKind, ProxyProtocolMode};
use apigate_fake_apiserver::{REPLICA_HEADER, USER_HEADER};
use apigate_test_support::client::{client_config, ClientTls, H2Client};
use apigate_test_support::config::{listener, millis, route, Config};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{eventually, read_head, write_all, Harness, HOST, OTHER_HOST, ROUTE};

/// Trust PROXY headers from loopback on `name`, with `mode`.
fn trust_loopback(config: &mut Config, name: &str, mode: ProxyProtocolMode) {
    let l = config.listener_mut(name).unwrap();
    l.proxy_protocol = mode;
    l.trusted_proxies = vec!["127.0.0.0/8".into(), "::1/128".into()];
}

fn rule(action: &str, address_type: Option<&str>, cidrs: &[&str]) -> RuleSpec {
    RuleSpec {
        action: action.into(),
        address_type: address_type.map(str::to_string),
        cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
    }
}

fn access(rules: Vec<RuleSpec>, default_action: Option<&str>) -> Option<AccessControlSpec> {
    Some(AccessControlSpec {
        rules,
        default_action: default_action.map(str::to_string),
    })
}

fn backends_of(config: &Config) -> Vec<SocketAddr> {
    config.routes[0]
        .spec
        .backends
        .static_addresses
        .iter()
        .map(|b| b.parse().unwrap())
        .collect()
}

/// The route in passthrough mode (no TLS material), same backends.
fn passthrough(config: &mut Config) {
    let backends = backends_of(config);
    config.routes[0] = route::passthrough("shoot", "garden-test", &[HOST], &backends);
}

/// A CONNECT listener besides the TLS one.
fn with_connect_listener(config: &mut Config) {
    config.gateway.spec.listeners.push(listener(
        "connect",
        ListenerKind::Connect,
        "127.0.0.1".parse().unwrap(),
    ));
}

fn metric(h: &Harness, name: &str, labels: &[(&str, &str)]) -> f64 {
    h.metrics().sum(name, labels)
}

/// An HTTP/2 connection that a PROXY v1 header says comes from `source`, to the route
/// `tls` names, with the status of one request on it; or why there is none.
async fn open_from(
    addr: SocketAddr,
    source: &str,
    tls: ClientTls,
) -> Result<(H2Client, u16), String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.write_all(&v1(source, 40000))
        .await
        .map_err(|e| e.to_string())?;
    let client = H2Client::over(tcp, &tls).await.map_err(|e| e.to_string())?;
    let status = client
        .get("/version", &[])
        .await
        .map_err(|e| e.to_string())?
        .status;
    Ok((client, status))
}

fn v1(source: &str, port: u16) -> Vec<u8> {
    let ip: IpAddr = source.parse().unwrap();
    let (family, dest) = if ip.is_ipv4() {
        ("TCP4", "127.0.0.1")
    } else {
        ("TCP6", "::1")
    };
    format!("PROXY {family} {source} {dest} {port} 443\r\n").into_bytes()
}

fn v2(source: &str) -> Vec<u8> {
    let ip: IpAddr = source.parse().unwrap();
    let dest: SocketAddr = if ip.is_ipv4() {
        "127.0.0.1:443".parse().unwrap()
    } else {
        "[::1]:443".parse().unwrap()
    };
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (SocketAddr::new(ip, 40000), dest),
    )
    .write_tlv(ppp::v2::Type::NoOp, b"padding")
    .unwrap()
    .build()
    .unwrap()
}

/// Connect, send `preface` (a PROXY header or nothing), then TLS + HTTP/2 and one GET.
async fn request_via(addr: SocketAddr, preface: &[u8], tls: &ClientTls) -> Result<u16, String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.write_all(preface).await.map_err(|e| e.to_string())?;
    let client = H2Client::over(tcp, tls).await.map_err(|e| e.to_string())?;
    let response = client
        .get("/version", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_ip_rules_use_the_proxy_address_and_direct_rules_the_tcp_peer() {
    let h = Harness::start_with(1, |c| {
        trust_loopback(c, "https", ProxyProtocolMode::Optional);
        c.routes[0].spec.access_control = access(
            vec![
                rule(
                    "allow",
                    Some("remote_ip"),
                    &["192.0.2.0/24", "2001:db8:1::/48"],
                ),
                rule("deny", Some("direct_remote_ip"), &["::1/128"]),
                rule("allow", Some("direct_remote_ip"), &["127.0.0.2/32"]),
            ],
            Some("deny"),
        );
    })
    .await;
    let tls = h.tls(None);
    let addr = h.addr();
    // Allowed by the PROXY source, v1 and v2, IPv4 and IPv6 sources.
    for preface in [
        v1("192.0.2.7", 1234),
        v2("192.0.2.8"),
        v1("2001:db8:1::5", 1),
        v2("2001:db8:1:2::9"),
    ] {
        assert_eq!(request_via(addr, &preface, &tls).await, Ok(200));
    }
    // Denied: the PROXY source is elsewhere; no header means the peer 127.0.0.1 is checked.
    for preface in [v1("198.51.100.1", 1234), v2("2001:db8:2::1"), Vec::new()] {
        assert!(
            request_via(addr, &preface, &tls).await.is_err(),
            "{preface:?}"
        );
    }
    assert_eq!(
        h.replicas[0].requests_total(),
        4,
        "denied clients reached nothing"
    );
    let denied = metric(
        &h,
        "apigate_access_total",
        &[
            ("family", "ipv4"),
            ("listener", "https"),
            ("reason", "acl_default"),
            ("result", "denied"),
            ("route", ROUTE),
        ],
    );
    assert_eq!(denied, 2.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_client_gets_an_access_denied_alert_and_no_certificate() {
    use tokio::io::AsyncReadExt;
    let h = Harness::start_with(1, |c| crate::support::allow_only(c, &["192.0.2.0/24"])).await;
    let mut tcp = TcpStream::connect(h.addr()).await.unwrap();
    tcp.write_all(&crate::support::client_hello(HOST))
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "closed in time");
    assert_eq!(
        answer,
        crate::support::alert(49),
        "access_denied, nothing else"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_with_direct_rules() {
    let h = Harness::start_on(IpAddr::V6(Ipv6Addr::LOCALHOST), 1, |c| {
        c.routes[0].spec.access_control = access(
            vec![rule("deny", Some("direct_remote_ip"), &["::1/128"])],
            Some("allow"),
        );
    })
    .await;
    assert!(
        request_via(h.addr(), &[], &h.tls(None)).await.is_err(),
        "::1 is denied"
    );
    // The refusal is counted once the alert is on its way: wait for the count.
    let denied = || {
        metric(
            &h,
            "apigate_access_total",
            &[
                ("family", "ipv6"),
                ("reason", "acl"),
                ("result", "denied"),
                ("route", ROUTE),
            ],
        )
    };
    eventually(Duration::from_secs(2), || denied() >= 1.0).await;
    assert_eq!(denied(), 1.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_untrusted_peers_and_malformed_headers_are_refused() {
    let h = Harness::start_with(1, |c| {
        let l = c.listener_mut("https").unwrap();
        l.proxy_protocol = ProxyProtocolMode::Optional;
        l.trusted_proxies = vec!["10.0.0.0/8".into()];
    })
    .await;
    let tls = h.tls(None);
    // No header from an untrusted peer: fine (optional).
    assert_eq!(request_via(h.addr(), &[], &tls).await, Ok(200));
    // A header from an untrusted peer: refused, whatever it claims.
    assert!(request_via(h.addr(), &v1("192.0.2.7", 1), &tls)
        .await
        .is_err());
    assert_eq!(
        metric(
            &h,
            "apigate_access_total",
            &[
                ("reason", "untrusted_proxy_header"),
                ("result", "denied"),
                ("route", "none")
            ]
        ),
        1.0
    );
    h.stop().await;

    let h = Harness::start_with(1, |c| {
        trust_loopback(c, "https", ProxyProtocolMode::Required);
        c.gateway.spec.defaults.handshake_timeout = Some(millis(1000));
    })
    .await;
    let tls = h.tls(None);
    assert!(
        request_via(h.addr(), &[], &tls).await.is_err(),
        "required but missing"
    );
    let mut truncated = v2("192.0.2.7");
    truncated.truncate(truncated.len() - 3);
    let no_crlf = b"PROXY TCP4 192.0.2.7 127.0.0.1 1 443".to_vec();
    for bad in [truncated, no_crlf] {
        let mut tcp = TcpStream::connect(h.addr()).await.unwrap();
        tcp.write_all(&bad).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "closed within the handshake deadline"
        );
    }
    // A refusal is counted just after its connection is closed: read once counted.
    let malformed = || {
        metric(
            &h,
            "apigate_access_total",
            &[
                ("reason", "malformed_proxy_header"),
                ("result", "denied"),
                ("route", "none"),
            ],
        )
    };
    assert!(
        eventually(Duration::from_secs(5), || malformed() >= 3.0).await,
        "three malformed headers counted: {}",
        malformed()
    );
    assert_eq!(h.replicas[0].requests_total(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gardener_provider_config_allow_and_deny() {
    for (action, kind, cidr, allowed) in [
        ("ALLOW", "remote_ip", "127.0.0.1/32", true),
        ("allow", "Remote_IP", "10.0.0.0/8", false),
        ("DENY", "source_ip", "127.0.0.0/8", false),
        ("deny", "direct_remote_ip", "10.0.0.0/8", true),
    ] {
        let gardener = GardenerAclConfig::new(rule(action, Some(kind), &[cidr]));
        let h = Harness::start_with(1, |c| c.routes[0].spec.acl = Some(gardener)).await;
        let result = request_via(h.addr(), &[], &h.tls(None)).await;
        assert_eq!(
            result.is_ok(),
            allowed,
            "{action} {kind} {cidr}: {result:?}"
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_allowed_networks_pass_an_allow_list_that_omits_them() {
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.access.always_allowed_cidrs = vec!["127.0.0.0/8".into()];
        c.routes[0].spec.acl = Some(GardenerAclConfig::new(rule(
            "ALLOW",
            Some("remote_ip"),
            &["203.0.113.0/24"],
        )));
    })
    .await;
    assert_eq!(request_via(h.addr(), &[], &h.tls(None)).await, Ok(200));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_address_closes_its_open_watch() {
    let mut h = Harness::start_with(1, |c| {
        c.routes[0].spec.access_control = access(vec![rule("allow", None, &["127.0.0.0/8"])], None);
    })
    .await;
    let client = h.h2(None).await;
    let mut watch = client
        .stream("/api/v1/namespaces/default/pods?watch=true", &[])
        .await
        .unwrap();
    assert!(watch.next_chunk(Duration::from_secs(5)).await.is_some());
    let mut revoked = h.config.clone();
    revoked.routes[0].spec.access_control =
        access(vec![rule("allow", None, &["10.0.0.0/8"])], None);
    h.reload(revoked).await;
    let started = std::time::Instant::now();
    let mut ended = false;
    while started.elapsed() < Duration::from_secs(10) {
        if watch.next_chunk(Duration::from_secs(10)).await.is_none() {
            ended = true;
            break;
        }
    }
    assert!(ended, "the watch was cut after revocation");
    assert!(
        client.get("/version", &[]).await.is_err(),
        "the connection is gone"
    );
    assert_eq!(
        metric(
            &h,
            "apigate_connections_revoked_total",
            &[("listener", "https"), ("reason", "acl_revoked")]
        ),
        1.0
    );
    // New connections from the revoked address are refused too.
    assert!(request_via(h.addr(), &[], &h.tls(None)).await.is_err());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_splices_tls_to_one_replica_per_connection_with_the_client_certificate() {
    let h = Harness::start_with(2, passthrough).await;
    // The client now talks TLS with the replica itself: it verifies the replica's
    // certificate and its own certificate authenticates it there.
    let tls = ClientTls {
        ca_pem: h.pki.replica_ca.cert_pem(),
        client_cert: Some((h.pki.alice.cert_pem.clone(), h.pki.alice.key_pem.clone())),
        server_name: HOST.into(),
    };
    let mut replicas = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let client = H2Client::connect(h.addr(), &tls).await.unwrap();
        let counts = client
            .spread("/version", &[], REPLICA_HEADER, 10, 2)
            .await
            .unwrap();
        assert_eq!(counts.len(), 1, "one replica per connection: {counts:?}");
        replicas.extend(counts.into_keys());
        let r = client.get("/api", &[]).await.unwrap();
        assert_eq!(r.headers.get(USER_HEADER).unwrap(), "alice");
        assert_eq!(r.headers.get("x-apiserver-authn").unwrap(), "x509");
    }
    assert_eq!(replicas.len(), 2, "connections are spread: {replicas:?}");
    assert_eq!(
        metric(
            &h,
            "apigate_passthrough_connections_total",
            &[("route", ROUTE)]
        ),
        4.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_honours_the_allowlist_and_a_split_client_hello() {
    let h = Harness::start_with(1, |c| {
        passthrough(c);
        trust_loopback(c, "https", ProxyProtocolMode::Optional);
        c.routes[0].spec.access_control =
            access(vec![rule("allow", None, &["192.0.2.0/24"])], None);
    })
    .await;
    let tls = ClientTls {
        ca_pem: h.pki.replica_ca.cert_pem(),
        client_cert: None,
        server_name: HOST.into(),
    };
    assert!(
        request_via(h.addr(), &[], &tls).await.is_err(),
        "127.0.0.1 is not allowed"
    );
    assert_eq!(
        request_via(h.addr(), &v1("192.0.2.1", 9), &tls).await,
        Ok(200)
    );
    // A ClientHello trickled one byte per TCP segment still routes.
    let (client, server) = tokio::io::duplex(64 * 1024);
    let tcp = TcpStream::connect(h.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let pump = tokio::spawn(trickle(server, tcp, v1("192.0.2.2", 10)));
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        client_config(&tls, vec![b"http/1.1".to_vec()]).unwrap(),
    ));
    let mut stream = connector
        .connect(
            rustls::pki_types::ServerName::try_from(HOST).unwrap(),
            client,
        )
        .await
        .unwrap();
    write_all(&mut stream, b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    pump.abort();
    h.stop().await;
}

/// Forward `client` ↔ `tcp`, sending the first 600 client bytes one per segment.
async fn trickle(client: tokio::io::DuplexStream, tcp: TcpStream, preface: Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    tcp_write.write_all(&preface).await.unwrap();
    let up = async move {
        let mut sent = 0usize;
        let mut buf = [0u8; 4096];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for byte in &buf[..n] {
                if sent < 600 {
                    tcp_write
                        .write_all(std::slice::from_ref(byte))
                        .await
                        .unwrap();
                    tcp_write.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_micros(200)).await;
                } else {
                    tcp_write
                        .write_all(std::slice::from_ref(byte))
                        .await
                        .unwrap();
                }
                sent += 1;
            }
        }
    };
    let down = async move {
        let _ = tokio::io::copy(&mut tcp_read, &mut client_write).await;
    };
    tokio::join!(up, down);
}

/// Send a CONNECT request; return the status line.
async fn connect(
    addr: SocketAddr,
    destination: Option<&str>,
    preface: &[u8],
) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(preface).await.unwrap();
    let header = destination
        .map(|d| format!("X-Gardener-Destination: {d}\r\n"))
        .unwrap_or_default();
    let request =
        format!("CONNECT kube-apiserver:443 HTTP/1.1\r\nHost: kube-apiserver:443\r\n{header}\r\n");
    write_all(&mut tcp, request.as_bytes()).await;
    let head = read_head(&mut tcp).await;
    (tcp, head)
}

const DESTINATION: &str = "outbound|443||kube-apiserver.garden-test.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_path_routes_by_destination_and_balances_inside_the_tunnel() {
    let h = Harness::start_with(3, with_connect_listener).await;
    let addr = h.listener("connect");
    let (tcp, head) = connect(addr, Some(DESTINATION), &[]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let client = H2Client::over(tcp, &h.tls(Some(&h.pki.alice)))
        .await
        .unwrap();
    let counts = client
        .spread("/version", &[], REPLICA_HEADER, 60, 4)
        .await
        .unwrap();
    assert_eq!(
        counts.len(),
        3,
        "terminated and balanced per request: {counts:?}"
    );
    let r = client
        .get("/api", &[("X-Remote-User", "admin")])
        .await
        .unwrap();
    assert_eq!(r.headers.get(USER_HEADER).unwrap(), "alice");

    for (destination, status) in [
        (None, "400"),
        (
            Some("outbound|443||kube-apiserver.other.svc.cluster.local"),
            "403",
        ),
        (Some(&format!("{DESTINATION}.evil.example.com")[..]), "403"),
        (Some(&format!("x{DESTINATION}")[..]), "403"),
    ] {
        let (_, head) = connect(addr, destination, &[]).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{destination:?}: {head}"
        );
    }
    assert_eq!(
        metric(
            &h,
            "apigate_access_total",
            &[
                ("listener", "connect"),
                ("reason", "unknown_destination"),
                ("result", "denied"),
                ("route", "none")
            ]
        ),
        3.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_bypasses_the_allowlist() {
    // 443 terminate and CONNECT.
    let h = Harness::start_with(1, |c| {
        with_connect_listener(c);
        trust_loopback(c, "https", ProxyProtocolMode::Optional);
        trust_loopback(c, "connect", ProxyProtocolMode::Optional);
        c.routes[0].spec.access_control =
            access(vec![rule("allow", None, &["192.0.2.0/24"])], None);
    })
    .await;
    assert!(
        request_via(h.addr(), &[], &h.tls(None)).await.is_err(),
        "443 terminate"
    );
    assert!(
        request_via(h.addr(), &v1("198.51.100.4", 1), &h.tls(None))
            .await
            .is_err(),
        "443 terminate, PROXY"
    );
    let (_, head) = connect(h.listener("connect"), Some(DESTINATION), &[]).await;
    assert!(head.starts_with("HTTP/1.1 403"), "CONNECT: {head}");
    let (_, head) = connect(
        h.listener("connect"),
        Some(DESTINATION),
        &v1("198.51.100.4", 1),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "CONNECT, PROXY: {head}");
    // The allowed address passes on both.
    assert_eq!(
        request_via(h.addr(), &v1("192.0.2.9", 1), &h.tls(None)).await,
        Ok(200)
    );
    let (tcp, head) = connect(
        h.listener("connect"),
        Some(DESTINATION),
        &v1("192.0.2.9", 1),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let client = H2Client::over(tcp, &h.tls(None)).await.unwrap();
    assert_eq!(client.get("/version", &[]).await.unwrap().status, 200);
    assert_eq!(h.replicas[0].requests_total(), 2);
    assert!(
        eventually(Duration::from_secs(1), || metric(
            &h,
            "apigate_access_total",
            &[
                ("listener", "connect"),
                ("reason", "acl_default"),
                ("result", "denied"),
                ("route", ROUTE)
            ]
        ) == 2.0)
        .await
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_listener_matches_ipv4_clients_against_ipv4_rules() {
    let pki = std::sync::Arc::new(crate::support::Pki::new());
    let replicas = apigate_fake_apiserver::spawn_many(
        1,
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        pki.replica_options(),
    )
    .await
    .unwrap();
    let backends = vec![replicas[0].local_addr()];
    let mut config = crate::support::base_config(IpAddr::V6(Ipv6Addr::UNSPECIFIED), &backends);
    config.routes[0].spec.access_control = access(
        vec![rule("allow", Some("direct_remote_ip"), &["127.0.0.1/32"])],
        None,
    );
    let h = Harness::start_config(pki, replicas, config).await;
    let port = h.addr().port();
    // An IPv4 client on the [::] listener arrives as ::ffff:127.0.0.1 and matches 127.0.0.1/32.
    let v4: SocketAddr = ([127, 0, 0, 1], port).into();
    assert_eq!(request_via(v4, &[], &h.tls(None)).await, Ok(200));
    let v6: SocketAddr = (Ipv6Addr::LOCALHOST, port).into();
    assert!(
        request_via(v6, &[], &h.tls(None)).await.is_err(),
        "::1 is not in the list"
    );
    assert_eq!(
        metric(
            &h,
            "apigate_access_total",
            &[
                ("family", "ipv4"),
                ("reason", "acl"),
                ("result", "allowed"),
                ("route", ROUTE)
            ]
        ),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_per_source_route_and_total_close_only_the_connection_over_them() {
    let h = Harness::start_with(1, |c| {
        trust_loopback(c, "https", ProxyProtocolMode::Optional);
        let backends = backends_of(c);
        c.routes.push(route::terminate(
            "other",
            "garden-other",
            &[OTHER_HOST],
            &backends,
        ));
        c.gateway.spec.connections.max = Some(5);
        c.gateway.spec.connections.max_per_route = Some(3);
        c.gateway.spec.connections.max_per_source = Some(2);
    })
    .await;
    let shoot = h.tls(None);
    let other = ClientTls {
        server_name: OTHER_HOST.into(),
        ..h.tls(None)
    };
    let addr = h.addr();
    let open = |source: &'static str, tls: ClientTls| open_from(addr, source, tls);
    // Counted just after the close the client sees.
    let refused = |result: &'static str| {
        let h = &h;
        async move {
            let counted = || metric(h, "apigate_connections_total", &[("result", result)]) == 1.0;
            eventually(Duration::from_secs(5), counted).await
        }
    };

    // Two from one address; a third from it is closed, one from elsewhere is not.
    let (a1, _) = open("192.0.2.1", shoot.clone()).await.unwrap();
    let (a2, _) = open("192.0.2.1", shoot.clone()).await.unwrap();
    assert!(open("192.0.2.1", shoot.clone()).await.is_err());
    assert!(refused("limit_source").await, "limit_source");
    let (_b, _) = open("192.0.2.2", shoot.clone()).await.unwrap();
    // The route holds three: a fourth is closed, the other route still admits.
    assert!(open("192.0.2.3", shoot.clone()).await.is_err());
    assert!(refused("limit_route").await, "limit_route");
    let (_c, _) = open("192.0.2.3", other.clone()).await.unwrap();
    let (_d, _) = open("192.0.2.4", other.clone()).await.unwrap();
    // Five are open: a sixth is closed whatever it asks for.
    assert!(open("192.0.2.5", other.clone()).await.is_err());
    assert!(refused("limit_total").await, "limit_total");
    // What was admitted keeps working; a closed connection frees its places.
    assert_eq!(a2.get("/version", &[]).await.unwrap().status, 200);
    drop(a1);
    let mut admitted = false;
    for _ in 0..50 {
        if open("192.0.2.1", shoot.clone()).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "the address and the route got their places back");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_changed_by_a_reload_apply_to_new_connections_only() {
    let mut h = Harness::start_with(1, |c| {
        trust_loopback(c, "https", ProxyProtocolMode::Optional)
    })
    .await;
    let addr = h.addr();
    let tls = h.tls(None);
    let open = |source: &'static str| open_from(addr, source, tls.clone());
    let (a1, _) = open("192.0.2.1").await.unwrap();
    let (a2, _) = open("192.0.2.1").await.unwrap();
    let (b, _) = open("192.0.2.2").await.unwrap();
    let mut config = h.config.clone();
    config.gateway.spec.connections.max_per_route = Some(4);
    config.gateway.spec.connections.max_per_source = Some(1);
    h.reload(config).await;
    // Open connections stay. The route's cap counts them; the per-source cap, off when
    // they were admitted, counts from the reload on.
    for client in [&a1, &a2, &b] {
        assert_eq!(client.get("/version", &[]).await.unwrap().status, 200);
    }
    let (_a3, _) = open("192.0.2.1").await.unwrap();
    assert!(
        open("192.0.2.1").await.is_err(),
        "a second since the reload"
    );
    assert!(open("192.0.2.3").await.is_err(), "the route holds its 4");
    let counted = |result: &'static str| {
        metric(&h, "apigate_connections_total", &[("result", result)]) == 1.0
    };
    assert!(eventually(Duration::from_secs(5), || counted("limit_source")).await);
    assert!(eventually(Duration::from_secs(5), || counted("limit_route")).await);
    h.stop().await;
}
