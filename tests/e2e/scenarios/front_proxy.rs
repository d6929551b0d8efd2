//! Token and anonymous requests never use the front-proxy mTLS pool, observed at the
//! real kube-apiserver.
//!
//! The observable: each replica's `apiserver_client_certificate_expiration_seconds`
//! histogram counts every request that arrives on a TLS connection presenting a client
//! certificate and reaches the x509 authenticator — also a token request on a
//! connection with the front-proxy certificate but without `X-Remote-User` (the
//! requestheader authenticator passes, x509 observes the certificate and rejects it,
//! the token authenticator accepts). A request without a client certificate, or a
//! front-proxy request WITH `X-Remote-User` (authenticated by requestheader before x509
//! runs), does not count. So: through apigate, tokens, anonymous requests (with or
//! without spoofed `X-Remote-*` headers) and certificate users must leave it unchanged;
//! one direct request with the front-proxy certificate and a token must add exactly 1
//! (the control: the observable works in this run).
//!
//! Nothing else may present a client certificate to the replicas meanwhile: the
//! scrapes authenticate with the admin token, and scenarios run one at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::ensure;
use apigate_e2e::{http1_exchange, short, Testbed, HOST};
use apigate_test_support::client::{ClientTls, H2Client};

use super::{client, kubectl_ok, Ctx, SPOOF};

const OBSERVED: &str = "apiserver_client_certificate_expiration_seconds_count";

/// Per replica: client certificates observed by x509, and requests served.
async fn observe(testbed: &Testbed) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut all = Vec::new();
    for replica in testbed.replicas()? {
        let metrics = testbed.scrape(replica).await?;
        ensure!(
            metrics.has(OBSERVED),
            "replica {replica} does not expose {OBSERVED}"
        );
        all.push((
            metrics.sum(OBSERVED, &[]),
            metrics.sum("apiserver_request_total", &[]),
        ));
    }
    Ok(all)
}

/// How many responses of each kind of request had each status.
#[derive(Default)]
struct Tally(BTreeMap<String, usize>);

impl Tally {
    fn add(&mut self, what: &str, status: u16) {
        *self.0.entry(format!("{what} → {status}")).or_insert(0) += 1;
    }
}

pub(crate) async fn token_and_anonymous_never_use_the_front_proxy_pool(
    ctx: Arc<Ctx>,
) -> anyhow::Result<()> {
    const N: usize = 30;
    let testbed = &ctx.testbed;
    let bearer = format!("Bearer {}", testbed.get("BOB_TOKEN")?);
    let with_token = [("Authorization", bearer.as_str())];
    let mut spoofed_token = SPOOF.to_vec();
    spoofed_token.push(("Authorization", &bearer));
    let pods = "/api/v1/namespaces/default/pods";
    let namespace = testbed.get("EXEC_NAMESPACE")?;
    let pod = testbed.get("EXEC_POD")?;

    // Connections first: the window holds requests only.
    let anonymous = client(&ctx, None).await?;
    let alice = client(&ctx, Some("alice")).await?;

    let before = observe(testbed).await?;
    let mut tally = Tally::default();
    for _ in 0..N {
        // HTTP/2, no client certificate: bob's token, anonymous, and both with spoofed
        // identity headers.
        let r = anonymous.get(pods, &with_token).await?;
        ensure!(r.status == 200, "token request: {}", r.status);
        tally.add("token", r.status);
        let r = anonymous.get(pods, &spoofed_token).await?;
        ensure!(
            r.status == 200,
            "token request with spoofed headers: {}",
            r.status
        );
        tally.add("token + spoofed X-Remote-*", r.status);
        let r = anonymous.get("/version", &[]).await?;
        ensure!(r.status == 200, "anonymous /version: {}", r.status);
        tally.add("anonymous /version", r.status);
        let r = anonymous.get(pods, &[]).await?;
        ensure!(
            r.status == 401 || r.status == 403,
            "anonymous pods: {}",
            r.status
        );
        tally.add("anonymous pods", r.status);
        let r = anonymous.get(pods, &SPOOF).await?;
        ensure!(
            r.status == 401 || r.status == 403,
            "anonymous with spoofed headers: {}",
            r.status
        );
        tally.add("anonymous + spoofed X-Remote-*", r.status);
        // A certificate user: requestheader authenticates it before x509 runs.
        let r = alice.get(pods, &[]).await?;
        ensure!(r.status == 200, "alice: {}", r.status);
        tally.add("alice (certificate)", r.status);
    }
    // kubectl with bob's token: HTTP/2 requests, and an exec upgrade over HTTP/1.1.
    // (kubectl 1.20 without credentials prompts for a password; anonymous requests
    // are sent by hand below.) And alice's certificate on the upgrade path.
    kubectl_ok(&ctx, "bob", &["-n", "default", "get", "pods"])?;
    kubectl_ok(&ctx, "bob", &["-n", namespace, "exec", pod, "--", "true"])?;
    kubectl_ok(&ctx, "alice", &["-n", namespace, "exec", pod, "--", "true"])?;
    // HTTP/1.1: a token request and an anonymous one, both with spoofed headers.
    let spoofed: String = SPOOF
        .iter()
        .map(|(name, value)| format!("\r\n{name}: {value}"))
        .collect();
    for (what, auth, want) in [
        (
            "token",
            format!("\r\nAuthorization: {bearer}"),
            "HTTP/1.1 200",
        ),
        ("anonymous", String::new(), "HTTP/1.1 403"),
    ] {
        let (head, body) = http1_exchange(
            ctx.gateway.address()?,
            &testbed.client_tls(None, HOST)?,
            &format!("GET {pods} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close{auth}{spoofed}"),
        )
        .await?;
        ensure!(
            head.starts_with(want),
            "HTTP/1.1 {what} request with spoofed headers: {head} {}",
            short(&body)
        );
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        tally.add(&format!("HTTP/1.1 {what} + spoofed X-Remote-*"), status);
    }
    // The upgrade path without credentials: an exec upgrade with spoofed identity
    // headers, refused by the API server.
    let (head, body) = http1_exchange(
        ctx.gateway.address()?,
        &testbed.client_tls(None, HOST)?,
        &format!(
            "POST /api/v1/namespaces/{namespace}/pods/{pod}/exec?command=true&stdout=true HTTP/1.1\r\n\
             Host: {HOST}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0{spoofed}"
        ),
    )
    .await?;
    ensure!(
        head.starts_with("HTTP/1.1 403") && body.contains("system:anonymous"),
        "anonymous exec upgrade with spoofed headers: {head} {}",
        short(&body)
    );
    tally.add("anonymous exec upgrade + spoofed X-Remote-*", 403);
    let after = observe(testbed).await?;

    let observed: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).collect();
    let served: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a.1 - b.1).collect();
    println!(
        "    through apigate: {:?}; per replica: served {served:?}, client certificates observed {observed:?}",
        tally.0
    );
    ensure!(
        served.iter().all(|s| *s >= (N as f64) / 2.0),
        "every replica serves part of the window's requests: {served:?}"
    );
    ensure!(
        observed.iter().all(|o| *o == 0.0),
        "kube-apiserver saw client certificates on requests without X-Remote-User \
         (a token or anonymous request sent over the front-proxy pool?): per replica {observed:?}"
    );

    // Control: the observable counts in this run. One token request presenting the
    // front-proxy certificate, straight to replica 0, adds exactly 1 there.
    let replica = testbed.replicas()?[0];
    let front_proxy = H2Client::connect(
        replica,
        &ClientTls {
            ca_pem: std::fs::read_to_string(testbed.pki("ca.crt")?)?,
            client_cert: Some((
                std::fs::read_to_string(testbed.get("FRONT_PROXY_CLIENT_CERT")?)?,
                std::fs::read_to_string(testbed.get("FRONT_PROXY_CLIENT_KEY")?)?,
            )),
            server_name: "localhost".into(),
        },
    )
    .await?;
    let r = front_proxy.get(pods, &with_token).await?;
    ensure!(
        r.status == 200,
        "control: token over a front-proxy connection: {}",
        r.status
    );
    let control = observe(testbed).await?;
    let counted: Vec<f64> = control.iter().zip(&after).map(|(c, a)| c.0 - a.0).collect();
    println!("    control (front-proxy certificate + token, direct to replica 0): {counted:?}");
    ensure!(
        counted.first() == Some(&1.0) && counted.iter().skip(1).all(|c| *c == 0.0),
        "control: one front-proxy request with a token should count once on replica 0: {counted:?}"
    );
    Ok(())
}
