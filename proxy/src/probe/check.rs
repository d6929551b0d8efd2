//! One active check of one replica: an HTTPS `GET /readyz` with the route's upstream
//! trust and the probe's identity, over a kept-alive HTTP/1.1 connection (terminate
//! mode), or a TCP connect (passthrough), and what its answer means.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apigate_control::snapshot::{HealthCheck, ProbeCredentials, Terminate};
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, HOST, USER_AGENT};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use crate::upstream::{connect, Failure};

/// Largest `/readyz` body read (kube-apiserver lists its checks: a few KiB).
const MAX_BODY: usize = 64 * 1024;

/// What kube-apiserver's failing `/readyz` says while it shuts down: its `shutdown`
/// check failed. The replica announces that it is going, so one such answer drains it.
const SHUTDOWN_CHECK_FAILED: &[u8] = b"[-]shutdown failed";

/// The verdict of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx, or the TCP connection stood (passthrough).
    Ready,
    /// The replica answered that it is not ready. `shutting_down`: its failing
    /// `shutdown` check says it is going away.
    NotReady {
        /// The replica announced its shutdown.
        shutting_down: bool,
    },
    /// 401 or 403: the probe's identity is wrong for this replica. Says nothing about
    /// the replica's health, so it never makes one unready.
    Unauthorized,
    /// No answer: connect, TLS or I/O failure.
    Unreachable(Failure),
    /// No answer within the probe's timeout.
    Timeout,
}

impl Outcome {
    /// Every [`Outcome::label`].
    pub const LABELS: [&'static str; 7] = [
        "ok",
        "not_ready",
        "shutting_down",
        "unauthorized",
        "tls",
        "connect",
        "timeout",
    ];

    /// Metric and log label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ready => "ok",
            Outcome::NotReady {
                shutting_down: false,
            } => "not_ready",
            Outcome::NotReady {
                shutting_down: true,
            } => "shutting_down",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Unreachable(Failure::Tls) => "tls",
            Outcome::Unreachable(_) => "connect",
            Outcome::Timeout => "timeout",
        }
    }

    /// What it tells the replica's health: `Some(true)` passed, `Some(false)` failed,
    /// `None` nothing (the probe itself is misconfigured).
    pub fn passed(self) -> Option<bool> {
        match self {
            Outcome::Ready => Some(true),
            Outcome::Unauthorized => None,
            Outcome::NotReady { .. } | Outcome::Unreachable(_) | Outcome::Timeout => Some(false),
        }
    }
}

/// Classify an HTTP answer to a readiness probe.
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    match status {
        200..=299 => Outcome::Ready,
        401 | 403 => Outcome::Unauthorized,
        _ => Outcome::NotReady {
            shutting_down: body
                .windows(SHUTDOWN_CHECK_FAILED.len())
                .any(|w| w == SHUTDOWN_CHECK_FAILED),
        },
    }
}

/// How one replica is checked; built once per prober from the route.
#[derive(Clone)]
pub enum Check {
    /// TCP connect (passthrough: apigate holds no trust for the replica's TLS).
    Tcp,
    /// HTTPS GET with the route's upstream trust.
    Https(Arc<Https>),
}

/// The HTTPS request of a check.
pub struct Https {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    host: HeaderValue,
    path: http::Uri,
    /// `Authorization` or `X-Remote-User`, per the probe's identity.
    identity: Option<(http::HeaderName, HeaderValue)>,
}

/// Why a check cannot be built from a route (compile validated all of it; this is the
/// safety net, reported as a probe that cannot run).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The route has no front-proxy certificate for a front-proxy probe.
    #[error("the probe identity is frontProxyUser but the route has no front-proxy certificate")]
    NoFrontProxy,
    /// A name, path or header value is not valid.
    #[error("invalid probe {what}: {value}")]
    Invalid {
        /// Which part.
        what: &'static str,
        /// The offending value (never a token).
        value: String,
    },
}

impl Check {
    /// The check for a terminate-mode route's replicas.
    pub fn https(terminate: &Terminate, health: &HealthCheck) -> Result<Check, CheckError> {
        let upstream = &terminate.upstream;
        let invalid = |what, value: &str| CheckError::Invalid {
            what,
            value: value.to_owned(),
        };
        let server_name = ServerName::try_from(upstream.server_name.clone())
            .map_err(|_| invalid("server name", &upstream.server_name))?;
        let host = HeaderValue::from_str(&upstream.server_name)
            .map_err(|_| invalid("server name", &upstream.server_name))?;
        let path =
            http::Uri::try_from(health.path.as_str()).map_err(|_| invalid("path", &health.path))?;
        let (config, identity) = match &health.credentials {
            ProbeCredentials::Anonymous => (upstream.http1.anonymous.clone(), None),
            ProbeCredentials::Token(token) => {
                let value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| invalid("token", "(not a valid header value)"))?;
                (
                    upstream.http1.anonymous.clone(),
                    Some((AUTHORIZATION, value)),
                )
            }
            ProbeCredentials::FrontProxy { user } => {
                let config = upstream
                    .http1
                    .front_proxy
                    .clone()
                    .ok_or(CheckError::NoFrontProxy)?;
                let value = HeaderValue::from_str(user).map_err(|_| invalid("user", user))?;
                (
                    config,
                    Some((http::HeaderName::from_static("x-remote-user"), value)),
                )
            }
        };
        Ok(Check::Https(Arc::new(Https {
            config,
            server_name,
            host,
            path,
            identity,
        })))
    }
}

/// A prober's connection to its replica, kept alive between probes like kubelet's and
/// a load balancer's: a probe then costs one request, not a TLS handshake.
#[derive(Default)]
pub struct Connection {
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Connection {
    /// Run `check` against `addr`, all of it within `timeout`.
    pub async fn probe(&mut self, check: &Check, addr: SocketAddr, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.run(check, addr, timeout)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // A half-answered request leaves the connection unusable.
                self.sender = None;
                Outcome::Timeout
            }
        }
    }

    async fn run(&mut self, check: &Check, addr: SocketAddr, timeout: Duration) -> Outcome {
        let https = match check {
            Check::Tcp => {
                return match connect::tcp(addr, timeout).await {
                    Ok(_) => Outcome::Ready,
                    Err(Failure::ConnectTimeout) => Outcome::Timeout,
                    Err(failure) => Outcome::Unreachable(failure),
                }
            }
            Check::Https(https) => https,
        };
        let kept = match self.sender.take() {
            // A kept connection the replica closed meanwhile is replaced.
            Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
            None => None,
        };
        let mut sender = match kept {
            Some(sender) => sender,
            None => match open(https, addr, timeout).await {
                Ok(sender) => sender,
                Err(Failure::ConnectTimeout) => return Outcome::Timeout,
                Err(failure) => return Outcome::Unreachable(failure),
            },
        };
        let mut request = http::Request::new(Empty::<Bytes>::new());
        *request.uri_mut() = https.path.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, https.host.clone());
        headers.insert(USER_AGENT, HeaderValue::from_static("apigate-probe"));
        if let Some((name, value)) = &https.identity {
            headers.insert(name.clone(), value.clone());
        }
        let broken = Outcome::Unreachable(Failure::Reset {
            before_response: true,
        });
        let Ok(response) = sender.send_request(request).await else {
            return broken;
        };
        let status = response.status().as_u16();
        let Ok(body) = Limited::new(response.into_body(), MAX_BODY).collect().await else {
            return broken;
        };
        // Reuse the connection for the next probe.
        self.sender = Some(sender);
        classify(status, &body.to_bytes())
    }
}

async fn open(
    https: &Https,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<SendRequest<Empty<Bytes>>, Failure> {
    let stream = connect::tls(
        addr,
        https.server_name.clone(),
        https.config.clone(),
        timeout,
    )
    .await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Reset {
            before_response: true,
        })?;
    // Ends when the sender is dropped (prober stopped or connection replaced) or the
    // replica closes.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_like_kube_apiserver_means_them() {
        assert_eq!(classify(200, b"ok"), Outcome::Ready);
        assert_eq!(classify(401, b""), Outcome::Unauthorized);
        assert_eq!(classify(403, b"forbidden"), Outcome::Unauthorized);
        assert_eq!(
            classify(
                500,
                b"[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed"
            ),
            Outcome::NotReady {
                shutting_down: false
            }
        );
        assert_eq!(
            classify(
                500,
                b"[+]ping ok\n[-]shutdown failed: reason withheld\nreadyz check failed"
            ),
            Outcome::NotReady {
                shutting_down: true
            }
        );
        assert_eq!(Outcome::Unauthorized.passed(), None);
        assert_eq!(Outcome::Timeout.passed(), Some(false));
    }
}
