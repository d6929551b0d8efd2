//! Replicas that refuse requests the way HTTP/2 servers do, for the forwarding core's
//! failure rule: a stream reset with a chosen error code (`REFUSED_STREAM` when a server
//! did not process a stream, `PROTOCOL_ERROR` when it rejects the request itself), or a
//! GOAWAY whose last-stream-id is below the request's stream (kube-apiserver shutting
//! down or using `--goaway-chance`). They speak TLS with the replica certificate, like
//! the fake replicas, and count the requests they saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use apigate_fake_apiserver::pki::Issued;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::h2_frame;

/// What the replica does with every request.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// RST_STREAM with this code.
    Reset(h2::Reason),
    /// A response with this status (the replica's own answer, e.g. 503).
    Answer(u16),
    /// GOAWAY with last-stream-id 0 (NO_ERROR), then close.
    GoAway,
    /// Take the first request, then never touch the connection again (a replica that
    /// hangs): no answer, no PING ACK, but the TCP connection stays open.
    Freeze,
}

/// A running misbehaving replica; stops when dropped.
pub struct Misbehaving {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Misbehaving {
    /// Start on 127.0.0.1 with `serving` as its certificate.
    pub async fn start(serving: &Issued, refusal: Refusal) -> Misbehaving {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).unwrap();
        let mut config =
            rustls::ServerConfig::builder_with_provider(apigate_control::compile::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    match refusal {
                        Refusal::Reset(_) | Refusal::Answer(_) | Refusal::Freeze => {
                            answer_every_stream(tls, refusal, &seen).await
                        }
                        Refusal::GoAway => go_away(tls, &seen).await,
                    }
                });
            }
        });
        Misbehaving {
            addr,
            requests,
            task,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests (HTTP/2 streams) received.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Misbehaving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer_every_stream<S>(io: S, refusal: Refusal, seen: &AtomicU64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((_request, mut respond))) = conn.accept().await {
        seen.fetch_add(1, Ordering::Relaxed);
        match refusal {
            Refusal::Reset(reason) => respond.send_reset(reason),
            Refusal::Answer(code) => {
                let response = http::Response::builder().status(code).body(()).unwrap();
                let _ = respond.send_response(response, true);
            }
            Refusal::Freeze => {
                // Hold the connection and the stream without polling either.
                let _hold = (conn, respond);
                std::future::pending::<()>().await;
                return;
            }
            Refusal::GoAway => {}
        }
    }
}

/// Speak just enough HTTP/2 by hand: settings, then a GOAWAY that declares no stream
/// processed as soon as the first request's HEADERS arrive.
async fn go_away<S>(mut io: S, seen: &AtomicU64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    if io.read_exact(&mut preface).await.is_err() {
        return;
    }
    // Our SETTINGS (empty).
    if io.write_all(&h2_frame(0x4, 0, 0, &[])).await.is_err() {
        return;
    }
    loop {
        let mut header = [0u8; 9];
        if io.read_exact(&mut header).await.is_err() {
            return;
        }
        let length =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let mut payload = vec![0u8; length];
        if io.read_exact(&mut payload).await.is_err() {
            return;
        }
        match kind {
            // SETTINGS from the client: acknowledge.
            0x4 if flags & 0x1 == 0 && io.write_all(&h2_frame(0x4, 0x1, 0, &[])).await.is_err() => {
                return;
            }
            // HEADERS: refuse the whole connection, processing nothing.
            0x1 => {
                seen.fetch_add(1, Ordering::Relaxed);
                let mut goaway = 0u32.to_be_bytes().to_vec(); // last-stream-id 0
                goaway.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
                let _ = io.write_all(&h2_frame(0x7, 0, 0, &goaway)).await;
                let _ = io.flush().await;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                return;
            }
            _ => {}
        }
    }
}
