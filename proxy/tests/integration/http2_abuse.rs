//! HTTP/2 clients that make apigate work without asking for anything: they reset the
//! streams they open, or flood control frames. Each is closed with GOAWAY
//! `ENHANCE_YOUR_CALM` and counted; the streams it reset are cancelled upstream; another
//! client's watch on another connection never notices; no replica is blamed. Driven by
//! a frame-level client written here, since no well-behaved client library misbehaves.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use apigate_test_support::config::millis;

use crate::support::{eventually, h2_frame, Harness, HOST};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame from apigate.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// A client speaking HTTP/2 frame by frame; a task reads apigate's frames into a
/// channel (so apigate is never blocked on a full socket).
struct RawH2 {
    write: WriteHalf<TlsStream<TcpStream>>,
    frames: tokio::sync::mpsc::UnboundedReceiver<Frame>,
    reader: JoinHandle<()>,
}

impl RawH2 {
    /// Connect, send the preface and an empty SETTINGS.
    async fn connect(h: &Harness) -> RawH2 {
        let config =
            apigate_test_support::client::client_config(&h.tls(None), vec![b"h2".to_vec()])
                .unwrap();
        let tcp = TcpStream::connect(h.addr()).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(rustls::pki_types::ServerName::try_from(HOST).unwrap(), tcp)
            .await
            .unwrap();
        let (mut read, write) = tokio::io::split(tls);
        let (tx, frames) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(frame) = read_frame(&mut read).await {
                if tx.send(frame).is_err() {
                    return;
                }
            }
        });
        let mut raw = RawH2 {
            write,
            frames,
            reader,
        };
        let mut start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        start.extend(h2_frame(SETTINGS, 0, 0, &[]));
        raw.send(&start).await;
        raw
    }

    /// Write bytes; a connection apigate already closed is not an error here.
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.write.write_all(bytes).await;
        let _ = self.write.flush().await;
    }

    /// The next frame, or `None` once the connection closed (or after 10 s).
    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(10), self.frames.recv())
            .await
            .ok()?
    }

    /// Frames until apigate closes the connection; the error code of its GOAWAY, if
    /// one came.
    async fn goaway_code(&mut self) -> Option<u32> {
        let mut code = None;
        while let Some(frame) = self.next().await {
            if frame.kind == GOAWAY {
                code = Some(u32::from_be_bytes(frame.payload[4..8].try_into().unwrap()));
            }
        }
        code
    }
}

impl Drop for RawH2 {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_frame(read: &mut ReadHalf<TlsStream<TcpStream>>) -> Option<Frame> {
    let mut head = [0u8; 9];
    read.read_exact(&mut head).await.ok()?;
    let length = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0; length];
    read.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]),
        payload,
    })
}

/// HEADERS (END_HEADERS | END_STREAM) of a GET for `path`: HPACK static-table
/// indexes and literals without indexing.
fn get(stream: u32, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, HOST.len() as u8]);
    block.extend_from_slice(HOST.as_bytes());
    h2_frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)
}

fn reset(stream: u32) -> Vec<u8> {
    h2_frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes())
}

/// The attack: the `n`th client stream of `range` opened with a watch and reset at once,
/// for each `n`, in one write.
fn reset_burst(range: std::ops::Range<u32>) -> Vec<u8> {
    let mut burst = Vec::new();
    for n in range {
        burst.extend(get(2 * n + 1, WATCH));
        burst.extend(reset(2 * n + 1));
    }
    burst
}

fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    h2_frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// apigate in front of one fake replica, its options changed by `replica` and the
/// configuration by `config`.
async fn behind_one_replica(
    replica: impl FnOnce(&mut apigate_fake_apiserver::ReplicaOptions),
    config: impl FnOnce(&mut apigate_test_support::config::Config),
) -> Harness {
    let pki = Arc::new(crate::support::Pki::new());
    let mut options = pki.replica_options();
    replica(&mut options);
    let host = std::net::Ipv4Addr::LOCALHOST.into();
    let replicas = apigate_fake_apiserver::spawn_many(1, host, options)
        .await
        .unwrap();
    let backends: Vec<_> = replicas.iter().map(|r| r.local_addr()).collect();
    let mut built = crate::support::base_config(host, &backends);
    config(&mut built);
    Harness::start_config(pki, replicas, built).await
}

const WATCH: &str = "/api/v1/namespaces/default/pods?watch=true";

fn open_watches(h: &Harness) -> u64 {
    h.replicas.iter().map(|r| r.open_watches()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_advertise_the_configured_streams_and_windows() {
    for (http2, streams, window, connection) in [
        (None, 100, 65_536, 1 << 20),
        (Some((7, 131_072, 4 << 20)), 7, 131_072, 4 << 20),
    ] {
        let h = Harness::start_with(1, |c| {
            if let Some((streams, window, connection)) = http2 {
                let spec = &mut c.gateway.spec.http2;
                spec.max_concurrent_streams = Some(streams);
                spec.initial_stream_window_bytes = Some(window);
                spec.initial_connection_window_bytes = Some(connection);
            }
        })
        .await;
        let mut raw = RawH2::connect(&h).await;
        let (mut advertised, mut raised) = (None, None);
        while advertised.is_none() || raised.is_none() {
            let frame = raw.next().await.expect("SETTINGS and WINDOW_UPDATE");
            match frame.kind {
                SETTINGS if frame.flags & 0x1 == 0 => {
                    let values: Vec<(u16, u32)> = frame
                        .payload
                        .chunks(6)
                        .map(|p| {
                            (
                                u16::from_be_bytes([p[0], p[1]]),
                                u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                            )
                        })
                        .collect();
                    advertised = Some(values);
                }
                WINDOW_UPDATE if frame.stream == 0 => {
                    raised = Some(u32::from_be_bytes(frame.payload[..4].try_into().unwrap()));
                }
                _ => {}
            }
        }
        let advertised = advertised.unwrap();
        // SETTINGS_MAX_CONCURRENT_STREAMS (3), SETTINGS_INITIAL_WINDOW_SIZE (4).
        assert!(advertised.contains(&(3, streams)), "{advertised:?}");
        assert!(advertised.contains(&(4, window)), "{advertised:?}");
        // The connection window starts at 65,535 (RFC 9113 §6.9.2) and is raised.
        assert_eq!(raised, Some(connection - 65_535));
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cancelled_upstream_then_closed_with_enhance_your_calm() {
    let h = Harness::start_with(3, |c| {
        // Even a single failure would eject a replica if it counted.
        c.gateway.spec.defaults.ejection.consecutive_failures = Some(1);
        // Streams reset before the engine took them up trip the HTTP/2 layer's own
        // bound (next test); raised here so that apigate's rate is what trips.
        c.gateway.spec.http2.max_pending_reset_streams = Some(10_000);
    })
    .await;
    let victim = h.h2(Some(&h.pki.alice)).await;
    let mut watch = victim.stream(WATCH, &[]).await.unwrap();
    assert!(watch.next_chunk(Duration::from_secs(5)).await.is_some());
    assert_eq!(open_watches(&h), 1);

    // Below the bound: 20 watches opened, then reset. Each is cancelled upstream, and
    // the connection stays (a PING is answered).
    let mut raw = RawH2::connect(&h).await;
    let streams: Vec<u32> = (0..20).map(|i| 2 * i + 1).collect();
    for &stream in &streams {
        raw.send(&get(stream, WATCH)).await;
    }
    assert!(
        eventually(Duration::from_secs(5), || open_watches(&h) == 21).await,
        "20 watches reached the replicas: {}",
        open_watches(&h)
    );
    for &stream in &streams {
        raw.send(&reset(stream)).await;
    }
    assert!(
        eventually(Duration::from_secs(5), || open_watches(&h) == 1).await,
        "the reset watches were cancelled upstream: {} open",
        open_watches(&h)
    );
    raw.send(&h2_frame(PING, 0, 0, b"stillok!")).await;
    let pong = loop {
        let frame = raw.next().await.expect("connection still open");
        if frame.kind == PING {
            break frame;
        }
    };
    assert_eq!((pong.flags, &pong.payload[..]), (0x1, &b"stillok!"[..]));

    // Beyond it: streams opened and reset in a loop, as the attack does.
    raw.send(&reset_burst(20..170)).await;
    assert_eq!(raw.goaway_code().await, Some(ENHANCE_YOUR_CALM));
    let m = h.metrics();
    assert_eq!(
        m.sum("apigate_http2_abuse_total", &[("reason", "rapid_reset")]),
        1.0
    );
    assert!(
        eventually(Duration::from_secs(5), || open_watches(&h) == 1).await,
        "nothing the attacker opened stays open upstream: {} open",
        open_watches(&h)
    );
    // No replica was blamed, and the victim's watch and connection never noticed.
    let m = h.metrics();
    assert_eq!(m.sum("apigate_backend_ejections_total", &[]), 0.0);
    assert_eq!(m.sum("apigate_retries_total", &[]), 0.0);
    for _ in 0..2 {
        let chunk = watch.next_chunk(Duration::from_secs(5)).await.unwrap();
        assert!(chunk.contains("\"type\""), "{chunk}");
    }
    assert_eq!(victim.get("/version", &[]).await.unwrap().status, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frame_floods_are_closed_with_enhance_your_calm() {
    let h = Harness::start(1).await;
    let floods: [(&str, Vec<u8>); 5] = [
        ("PING", h2_frame(PING, 0, 0, &[7; 8])),
        ("SETTINGS", h2_frame(SETTINGS, 0, 0, &[])),
        ("PRIORITY", h2_frame(PRIORITY, 0, 3, &[0, 0, 0, 0, 16])),
        ("empty DATA", h2_frame(DATA, 0, 1, &[])),
        ("WINDOW_UPDATE", window_update(0, 1)),
    ];
    for (i, (name, frame)) in floods.iter().enumerate() {
        let mut raw = RawH2::connect(&h).await;
        let mut flood = Vec::new();
        if *name == "empty DATA" {
            // A request whose body never ends: empty DATA frames keep it "going".
            let mut block = vec![0x83, 0x87, 0x04, 1, b'/', 0x01, HOST.len() as u8];
            block.extend_from_slice(HOST.as_bytes());
            flood.extend(h2_frame(HEADERS, END_HEADERS, 1, &block));
        }
        for _ in 0..150 {
            flood.extend_from_slice(frame);
        }
        raw.send(&flood).await;
        assert_eq!(raw.goaway_code().await, Some(ENHANCE_YOUR_CALM), "{name}");
        assert_eq!(
            h.metrics()
                .sum("apigate_http2_abuse_total", &[("reason", "control_flood")]),
            (i + 1) as f64,
            "{name}"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_updates_earned_by_a_large_response_are_not_a_flood() {
    // 2,000 objects of 1 KiB: a list of about 2.5 MB, sent as some 150 DATA frames.
    let h = behind_one_replica(
        |replica| {
            replica.list_size = 2000;
            replica.object_bytes = 1024;
        },
        |c| c.gateway.spec.http2.max_control_frames_per_second = Some(5),
    )
    .await;

    // A client that, like Go's, returns window for every DATA frame it reads: one
    // WINDOW_UPDATE for the stream and one for the connection.
    let mut raw = RawH2::connect(&h).await;
    raw.send(&get(1, "/api/v1/namespaces/default/pods")).await;
    let (mut body, mut updates) = (0usize, 0usize);
    loop {
        let frame = raw.next().await.expect("the whole list before any close");
        assert_ne!(frame.kind, GOAWAY, "{:?}", frame.payload);
        if frame.kind != DATA || frame.stream != 1 {
            continue;
        }
        body += frame.payload.len();
        if !frame.payload.is_empty() {
            let size = frame.payload.len() as u32;
            let mut both = window_update(1, size);
            both.extend(window_update(0, size));
            raw.send(&both).await;
            updates += 2;
        }
        if frame.flags & END_STREAM != 0 {
            break;
        }
    }
    assert!(body > 2_000_000, "{body} bytes");
    assert!(
        updates > 100,
        "{updates} updates, far above the bound of 5 a second"
    );
    assert_eq!(h.metrics().sum("apigate_http2_abuse_total", &[]), 0.0);
    // Unearned, the same frames are a flood.
    let mut flood = Vec::new();
    for _ in 0..10 {
        flood.extend(window_update(0, 1));
    }
    raw.send(&flood).await;
    assert_eq!(raw.goaway_code().await, Some(ENHANCE_YOUR_CALM));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_before_streams_are_taken_up_trip_the_http2_layers_bound() {
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.http2.max_pending_reset_streams = Some(5);
        c.gateway.spec.http2.max_resets_per_second = Some(100_000);
    })
    .await;
    // Streams opened and reset in one write: the HTTP/2 layer sees the resets before
    // the engine takes the streams up. 5 are allowed; 200 are not.
    let mut raw = RawH2::connect(&h).await;
    raw.send(&reset_burst(0..200)).await;
    assert_eq!(raw.goaway_code().await, Some(ENHANCE_YOUR_CALM));
    assert!(
        eventually(Duration::from_secs(5), || h
            .metrics()
            .sum("apigate_http2_abuse_total", &[("reason", "http2_layer")])
            == 1.0)
        .await
    );
    assert!(eventually(Duration::from_secs(5), || open_watches(&h) == 0).await);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_no_ping_is_closed() {
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.http2.keepalive_interval = Some(millis(500));
        c.gateway.spec.http2.keepalive_timeout = Some(millis(500));
    })
    .await;
    // After the preface, the client goes silent: no ACK for SETTINGS or PING.
    let mut raw = RawH2::connect(&h).await;
    let mut pinged = false;
    while let Some(frame) = raw.next().await {
        if frame.kind == PING && frame.flags == 0 {
            assert_eq!(frame.payload, b"apigate!");
            pinged = true;
        }
    }
    assert!(pinged, "a PING came before the close");
    assert_eq!(
        h.metrics().sum(
            "apigate_http2_keepalive_timeouts_total",
            &[("route", crate::support::ROUTE)]
        ),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_on_a_live_client_outlives_many_keepalive_intervals() {
    // Replicas that send no watch event for an hour: the watch is silent throughout.
    let h = behind_one_replica(
        |replica| replica.watch_event_interval = Duration::from_secs(3600),
        |c| {
            c.gateway.spec.http2.keepalive_interval = Some(millis(300));
            c.gateway.spec.http2.keepalive_timeout = Some(millis(300));
        },
    )
    .await;

    let client = h.h2(Some(&h.pki.alice)).await;
    let mut watch = client.stream(WATCH, &[]).await.unwrap();
    assert_eq!(watch.status, 200);
    // The replica sends its first event at once, then nothing for an hour.
    assert!(watch.next_chunk(Duration::from_secs(5)).await.is_some());
    // Ten intervals of silence on the watch; the client's HTTP/2 stack answers the
    // PINGs (apigate takes their ACKs out before the engine reads them).
    assert!(watch.next_chunk(Duration::from_secs(3)).await.is_none());
    assert!(client.is_open());
    assert_eq!(open_watches(&h), 1, "the watch is still open upstream");
    assert_eq!(client.get("/version", &[]).await.unwrap().status, 200);
    assert_eq!(
        h.metrics()
            .sum("apigate_http2_keepalive_timeouts_total", &[]),
        0.0
    );

    // A raw client that answers each PING itself (and sends nothing else) stays too.
    let mut raw = RawH2::connect(&h).await;
    let mut answered = 0;
    while answered < 5 {
        let frame = raw.next().await.expect("still open");
        if frame.kind == SETTINGS && frame.flags == 0 {
            raw.send(&h2_frame(SETTINGS, 0x1, 0, &[])).await;
        }
        if frame.kind == PING && frame.flags == 0 {
            raw.send(&h2_frame(PING, 0x1, 0, &frame.payload)).await;
            answered += 1;
        }
    }
    raw.send(&get(1, "/version")).await;
    let answer = loop {
        let frame = raw.next().await.expect("the request is answered");
        if frame.kind == HEADERS && frame.stream == 1 {
            break frame;
        }
    };
    // HPACK static index 8 is ":status: 200".
    assert_eq!(answer.payload.first(), Some(&0x88));
    assert_eq!(
        h.metrics()
            .sum("apigate_http2_keepalive_timeouts_total", &[]),
        0.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_back_pressures_the_replica_and_holds_no_more() {
    // A replica streaming a watch as fast as it may: an event of ~5 KB every 1 ms.
    let h = behind_one_replica(
        |replica| {
            replica.watch_event_interval = Duration::from_millis(1);
            replica.object_bytes = 4096;
        },
        |_| {},
    )
    .await;
    let events = |h: &Harness| h.replicas[0].watch_events();

    // The slow reader: it never returns window, so apigate may send it 64 KiB.
    let mut raw = RawH2::connect(&h).await;
    raw.send(&get(1, WATCH)).await;
    let mut received = 0;
    while received < 60_000 {
        let frame = raw.next().await.expect("the watch streams");
        if frame.kind == DATA {
            received += frame.payload.len();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled = events(&h);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Unbounded, 2,000 more events (10 MB) would have been read from the replica by
    // now; back-pressured, no more than the windows between hold: the client's 64 KiB
    // and the upstream stream's 256 KiB (about 60 events), plus a few in transit.
    let more = events(&h) - stalled;
    assert!(
        more < 20,
        "{more} events read while the client read nothing"
    );
    assert!(stalled < 200, "{stalled} events in the windows and buffers");

    // Others are not held up, also on the same upstream connection: another client's
    // watch streams megabytes while the slow reader's stream stays stalled.
    let other = h.h2(Some(&h.pki.alice)).await;
    let mut watch = other.stream(WATCH, &[]).await.unwrap();
    let mut streamed = 0;
    while streamed < 4_000_000 {
        let chunk = watch.next_chunk(Duration::from_secs(5)).await;
        streamed += chunk.expect("the other watch keeps streaming").len();
    }
    drop(watch);
    assert_eq!(other.get("/version", &[]).await.unwrap().status, 200);

    // Window returned: the slow reader's watch flows again.
    let before = events(&h);
    let mut update = window_update(1, 16 << 20);
    update.extend(window_update(0, 16 << 20));
    raw.send(&update).await;
    assert!(
        eventually(Duration::from_secs(5), || events(&h) > before + 500).await,
        "the watch resumed"
    );
    h.stop().await;
}
