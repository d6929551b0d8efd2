//! The PROXY protocol (v1 text and v2 binary), as cloud load balancers send it.
//!
//! A header is honoured only from a trusted peer: anyone else could claim any source
//! address and walk past an allowlist. Reads are bounded in time and size; a truncated
//! or malformed header closes the connection. v2 TLVs are skipped; the `LOCAL` command
//! (health checks from the load balancer itself) keeps the TCP peer.

use std::net::{IpAddr, SocketAddr};

use apigate_control::model::ProxyProtocolMode;
use bytes::BytesMut;
use ppp::{HeaderResult, PartialResult};
use tokio::net::TcpStream;

use super::read::read_more;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// v2 headers may be up to 16 + 65535 bytes; longer than this is refused.
const MAX_HEADER: usize = 16 + 4096;
/// A v1 header is one line of at most 107 bytes, CRLF included (the specification).
const V1_MAX: usize = 107;

/// The addresses an allowlist can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddrs {
    /// The TCP peer (`direct_remote_ip`).
    pub direct: SocketAddr,
    /// The client address the PROXY header carried, or the TCP peer (`remote_ip`).
    pub remote: SocketAddr,
}

impl ClientAddrs {
    /// No PROXY header: both are the TCP peer.
    pub fn direct(peer: SocketAddr) -> Self {
        ClientAddrs {
            direct: peer,
            remote: peer,
        }
    }
}

/// Why a connection was refused while reading the PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// A header (or the requirement of one) from a peer not in `trustedProxies`.
    #[error("PROXY header from untrusted peer {0}")]
    Untrusted(IpAddr),
    /// Missing where required, truncated, malformed, too long, or too slow.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
}

impl ProxyHeaderError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyHeaderError::Untrusted(_) => "untrusted_proxy_header",
            ProxyHeaderError::Malformed(_) => "malformed_proxy_header",
        }
    }
}

enum Start {
    Header,
    NoHeader,
    Undecided,
}

fn classify(buf: &[u8]) -> Start {
    let matches = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    let v1 = matches(V1_PREFIX);
    let v2 = matches(V2_SIGNATURE);
    if (v1 && buf.len() >= V1_PREFIX.len()) || (v2 && buf.len() >= V2_SIGNATURE.len()) {
        Start::Header
    } else if !v1 && !v2 {
        Start::NoHeader
    } else {
        Start::Undecided
    }
}

/// What the bytes read so far say about the PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not decided yet: read more.
    NeedMore,
    /// Decided: the client addresses, and how many leading bytes were the header (0
    /// when there was none).
    Done {
        /// The addresses an allowlist checks.
        addrs: ClientAddrs,
        /// Bytes to drop before the TLS or CONNECT bytes that follow.
        length: usize,
    },
}

/// Decide from `buf`, the connection's first bytes, whether a PROXY header is there and
/// what it says. Pure (no I/O), so the reader below and the fuzz target run the same
/// logic; once it answers `Done` or an error, more bytes never change the answer.
pub fn parse(
    buf: &[u8],
    peer: SocketAddr,
    mode: ProxyProtocolMode,
    trusted: bool,
) -> Result<Parsed, ProxyHeaderError> {
    let none = Parsed::Done {
        addrs: ClientAddrs::direct(peer),
        length: 0,
    };
    if mode == ProxyProtocolMode::Off {
        return Ok(none);
    }
    match classify(buf) {
        Start::Header => {}
        Start::NoHeader => {
            return match mode {
                ProxyProtocolMode::Required if trusted => {
                    Err(ProxyHeaderError::Malformed("required but missing".into()))
                }
                ProxyProtocolMode::Required => Err(ProxyHeaderError::Untrusted(peer.ip())),
                _ => Ok(none),
            };
        }
        Start::Undecided => return Ok(Parsed::NeedMore),
    }
    if !trusted {
        return Err(ProxyHeaderError::Untrusted(peer.ip()));
    }
    let too_long = || ProxyHeaderError::Malformed("header too long".into());
    // A v1 line is parsed only once its CRLF is there: the parser reads a line cut off
    // inside a field (a port, an address) as malformed, which would refuse a good
    // header that TCP happened to split.
    if buf.starts_with(V1_PREFIX) {
        let line = &buf[..buf.len().min(V1_MAX)];
        if !line.windows(2).any(|w| w == b"\r\n") {
            return if line.len() == V1_MAX {
                Err(too_long())
            } else {
                Ok(Parsed::NeedMore)
            };
        }
    }
    let parsed = HeaderResult::parse(buf);
    if parsed.is_complete() {
        let (addrs, length) = addresses(parsed, peer)?;
        // The bound holds however the bytes arrived: in one read or in many.
        if length > MAX_HEADER {
            return Err(too_long());
        }
        return Ok(Parsed::Done { addrs, length });
    }
    if buf.len() > MAX_HEADER {
        return Err(too_long());
    }
    Ok(Parsed::NeedMore)
}

/// Read the PROXY header, if the listener's mode and the peer call for one. Returns the
/// client addresses and the bytes read past the header (to be replayed).
pub async fn read(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    mode: ProxyProtocolMode,
    trusted: bool,
    deadline: tokio::time::Instant,
) -> Result<(ClientAddrs, BytesMut), ProxyHeaderError> {
    let mut buf = BytesMut::with_capacity(512);
    loop {
        if let Parsed::Done { addrs, length } = parse(&buf, peer, mode, trusted)? {
            let rest = buf.split_off(length);
            return Ok((addrs, rest));
        }
        match read_more(tcp, &mut buf, deadline).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ProxyHeaderError::Malformed(
                    "connection closed before the header ended".into(),
                ))
            }
            Err(e) => return Err(ProxyHeaderError::Malformed(e.to_string())),
        }
    }
}

/// The client address from a complete parse, and the header's length in bytes.
fn addresses(
    parsed: HeaderResult<'_>,
    peer: SocketAddr,
) -> Result<(ClientAddrs, usize), ProxyHeaderError> {
    let from = |remote: SocketAddr| ClientAddrs {
        direct: peer,
        remote,
    };
    match parsed {
        HeaderResult::V1(Ok(header)) => {
            let length = header.header.len();
            let addrs = match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    from(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    from(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                ppp::v1::Addresses::Unknown => ClientAddrs::direct(peer),
            };
            Ok((addrs, length))
        }
        HeaderResult::V2(Ok(header)) => {
            let length = header.len();
            let addrs = match (header.command, header.addresses) {
                (ppp::v2::Command::Local, _) => ClientAddrs::direct(peer),
                (_, ppp::v2::Addresses::IPv4(a)) => {
                    from(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (_, ppp::v2::Addresses::IPv6(a)) => {
                    from(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                // Unspecified or Unix: no usable address; keep the peer.
                _ => ClientAddrs::direct(peer),
            };
            Ok((addrs, length))
        }
        HeaderResult::V1(Err(e)) => Err(ProxyHeaderError::Malformed(format!("v1: {e}"))),
        HeaderResult::V2(Err(e)) => Err(ProxyHeaderError::Malformed(format!("v2: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn v1_and_v2_headers_yield_the_client_address_and_length() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.2 56324 443\r\n\x16\x03\x01";
        let (addrs, len) = addresses(HeaderResult::parse(v1), peer()).unwrap();
        assert_eq!(addrs.remote, "192.0.2.7:56324".parse().unwrap());
        assert_eq!(addrs.direct, peer());
        assert_eq!(&v1[len..], b"\x16\x03\x01");

        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "[2001:db8::7]:1234".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:443".parse::<SocketAddr>().unwrap(),
            ),
        )
        .write_tlv(ppp::v2::Type::Authority, b"example.com")
        .unwrap()
        .build()
        .unwrap();
        let (addrs, len) = addresses(HeaderResult::parse(&header), peer()).unwrap();
        assert_eq!(addrs.remote, "[2001:db8::7]:1234".parse().unwrap());
        assert_eq!(len, header.len(), "TLVs are part of the header and skipped");
    }

    #[test]
    fn local_command_keeps_the_peer() {
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        let (addrs, _) = addresses(HeaderResult::parse(&header), peer()).unwrap();
        assert_eq!(addrs, ClientAddrs::direct(peer()));
    }

    #[test]
    fn start_is_classified_from_the_first_bytes() {
        assert!(matches!(classify(b"PRO"), Start::Undecided));
        assert!(matches!(classify(b"PROXY "), Start::Header));
        assert!(matches!(classify(b"\r\n\r\n\0\r\nQUIT\n"), Start::Header));
        assert!(matches!(classify(b"\x16\x03\x01"), Start::NoHeader));
        assert!(matches!(classify(b"GET / HTTP/1.1"), Start::NoHeader));
        assert!(matches!(classify(b""), Start::Undecided));
    }

    #[test]
    fn the_length_bound_holds_however_the_header_arrives() {
        // A v2 header longer than the bound is refused complete in one read, as it is
        // when it arrives in pieces (the answer must not depend on how TCP split it).
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "192.0.2.7:1234".parse::<SocketAddr>().unwrap(),
                "10.0.0.2:443".parse::<SocketAddr>().unwrap(),
            ),
        )
        .write_tlv(ppp::v2::Type::NoOp, &[0; MAX_HEADER])
        .unwrap()
        .build()
        .unwrap();
        let decide = |bytes: &[u8]| parse(bytes, peer(), ProxyProtocolMode::Required, true);
        let too_long = Err(ProxyHeaderError::Malformed("header too long".into()));
        assert_eq!(decide(&header), too_long);
        assert_eq!(decide(&header[..MAX_HEADER + 1]), too_long);
        assert_eq!(decide(&header[..100]), Ok(Parsed::NeedMore));
    }

    #[test]
    fn a_header_split_anywhere_reads_the_same() {
        // Found by the fuzz target: a v1 line cut before its last field was malformed.
        let v1 = b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n\x16\x03\x01";
        let v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "192.0.2.7:1234".parse::<SocketAddr>().unwrap(),
                "10.0.0.2:443".parse::<SocketAddr>().unwrap(),
            ),
        )
        .write_tlv(ppp::v2::Type::Authority, b"example.com")
        .unwrap()
        .build()
        .unwrap();
        for header in [&v1[..], &v2] {
            let decide = |bytes: &[u8]| parse(bytes, peer(), ProxyProtocolMode::Required, true);
            let whole = decide(header);
            assert!(matches!(whole, Ok(Parsed::Done { .. })), "{whole:?}");
            for cut in 0..header.len() {
                let prefix = decide(&header[..cut]);
                assert!(
                    prefix == Ok(Parsed::NeedMore) || prefix == whole,
                    "cut at {cut}: {prefix:?}"
                );
            }
        }
        // A line without CRLF within 107 bytes is refused, in one read or many.
        let long = [&b"PROXY TCP4 "[..], &[b'1'; 200]].concat();
        let decide = |bytes: &[u8]| parse(bytes, peer(), ProxyProtocolMode::Required, true);
        let too_long = Err(ProxyHeaderError::Malformed("header too long".into()));
        assert_eq!(decide(&long), too_long);
        assert_eq!(decide(&long[..V1_MAX]), too_long);
        assert_eq!(decide(&long[..V1_MAX - 1]), Ok(Parsed::NeedMore));
    }

    #[test]
    fn an_untrusted_peer_never_sets_the_address() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.2 56324 443\r\n";
        for mode in [ProxyProtocolMode::Optional, ProxyProtocolMode::Required] {
            assert_eq!(
                parse(v1, peer(), mode, false),
                Err(ProxyHeaderError::Untrusted(peer().ip()))
            );
        }
        let off = parse(v1, peer(), ProxyProtocolMode::Off, true);
        let direct = Parsed::Done {
            addrs: ClientAddrs::direct(peer()),
            length: 0,
        };
        assert_eq!(
            off,
            Ok(direct),
            "with the mode off the bytes are not a header"
        );
    }

    #[test]
    fn malformed_headers_are_errors() {
        for bad in [
            &b"PROXY TCP4 999.0.0.1 10.0.0.2 1 2\r\n"[..],
            b"PROXY BOGUS\r\n",
        ] {
            let parsed = HeaderResult::parse(bad);
            assert!(parsed.is_complete(), "{bad:?}");
            assert!(addresses(parsed, peer()).is_err(), "{bad:?}");
        }
        // A v1 line without CRLF waits for more; the size and time bounds end it.
        let cut = b"PROXY TCP4 192.0.2.7 10.0.0.2 56324 443";
        let decided = parse(cut, peer(), ProxyProtocolMode::Required, true);
        assert_eq!(decided, Ok(Parsed::NeedMore));
    }
}
