//! `apigate rollout status|resume|abort|promote`: a small client of the admin
//! endpoint, so operators need neither curl nor the path layout.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Errors talking to the admin endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The token file could not be read.
    #[error("reading the token file {path}: {source}")]
    Token {
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Connecting or speaking HTTP failed.
    #[error("admin endpoint {address}: {reason}")]
    Transport {
        /// Where.
        address: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The endpoint answered with an error status.
    #[error("admin endpoint answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its explanation.
        body: String,
    },
}

/// `GET /rollout` (`action` `None`) or `POST /rollout/<action>`; the body on success.
pub async fn rollout(
    address: SocketAddr,
    action: Option<&str>,
    token_file: Option<&Path>,
) -> Result<String, ClientError> {
    let token = match token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| ClientError::Token {
                    path: path.display().to_string(),
                    source,
                })?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let transport = |reason: String| ClientError::Transport { address, reason };
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| transport(e.to_string()))?;
        tokio::spawn(connection);
        let (method, path) = match action {
            None => (hyper::Method::GET, "/rollout".to_string()),
            Some(action) => (hyper::Method::POST, format!("/rollout/{action}")),
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, address.to_string());
        if let Some(token) = &token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| transport(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(e.to_string()))?
            .to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status == 200 {
            Ok(body)
        } else {
            Err(ClientError::Refused {
                status,
                body: body.trim().to_string(),
            })
        }
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| transport("no answer within 30 s".into()))?
}
