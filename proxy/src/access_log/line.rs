//! One access log line from an [`Entry`], as JSON or logfmt. Pure: the writer thread
//! calls it, and tests read what it writes.
//!
//! Fields, in order (empty ones left out where marked):
//! `log` (always `access`), `time` (the head's arrival, RFC 3339 UTC), `route`,
//! `listener`, `client`, `peer`, `user` (certificate CN, `token:<hash>`, or
//! `anonymous`), `groups` (certificate users), `protocol`, `method`, `uri`, `verb`,
//! `api_group`, `resource`, `subresource`, `namespace`, `name` (resource requests, each
//! when present; `method`, `uri` and `verb` are absent for a head the transport refused
//! before it was read), `status` (0: none sent), `answered_by_apigate` (the reason, when
//! apigate answered), `duration_seconds`, `bytes_in`, `bytes_out`, `backend`, `retries`,
//! `audit_id`.

use std::io::Write;

use apigate_control::model::AccessLogFormat;

use super::Entry;
use crate::conn::ClientName;
use crate::http::request_info::{decoded_path, RequestInfo};

/// Append `entry`'s line, newline included, to `out`.
pub fn render(entry: &Entry, out: &mut Vec<u8>) {
    let mut line = Line::start(entry.settings.format, out);
    line.str("log", "access");
    line.display("time", humantime::format_rfc3339_millis(entry.time));
    line.str("route", &entry.route);
    line.str("listener", &entry.listener);
    line.display("client", entry.client);
    line.display("peer", entry.peer);
    let name = entry.auth.name(
        entry
            .authorization
            .as_ref()
            .map(http::HeaderValue::as_bytes),
    );
    line.str("user", name.user());
    if let ClientName::Certificate(identity) = &name {
        if !identity.groups.is_empty() {
            line.list("groups", &identity.groups);
        }
    }
    line.str("protocol", entry.protocol);
    let info = entry.request.as_ref().map(|(method, uri)| {
        line.str("method", method.as_str());
        line.str("uri", uri.path_and_query().map_or("/", |p| p.as_str()));
        (method, decoded_path(uri.path()), uri.query().unwrap_or(""))
    });
    let info = info
        .as_ref()
        .map(|(method, path, query)| RequestInfo::parse(method, path, query, entry.upgrade));
    if let Some(info) = &info {
        line.str("verb", info.verb.as_str());
    }
    if let Some(target) = info.and_then(|i| i.target) {
        for (key, value) in [
            ("api_group", target.group),
            ("resource", target.resource),
            ("subresource", target.subresource),
            ("namespace", target.namespace),
            ("name", target.name),
        ] {
            if !value.is_empty() {
                line.str(key, value);
            }
        }
    }
    line.display("status", entry.status);
    if let Some(reason) = entry.answered {
        line.str("answered_by_apigate", reason);
    }
    line.display(
        "duration_seconds",
        format_args!("{:.6}", entry.duration.as_secs_f64()),
    );
    line.display("bytes_in", entry.bytes_in);
    line.display("bytes_out", entry.bytes_out);
    line.str(
        "backend",
        entry.backend.as_ref().map_or("none", |b| b.label.as_str()),
    );
    line.display("retries", entry.retries);
    match &entry.audit_id {
        Some(id) => line.str("audit_id", &String::from_utf8_lossy(id.as_bytes())),
        None => line.str("audit_id", ""),
    }
    line.end();
}

/// A line being written in one of the two formats.
struct Line<'a> {
    format: AccessLogFormat,
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Line<'a> {
    fn start(format: AccessLogFormat, out: &'a mut Vec<u8>) -> Self {
        if format == AccessLogFormat::Json {
            out.push(b'{');
        }
        Line {
            format,
            out,
            first: true,
        }
    }

    fn key(&mut self, key: &str) {
        match self.format {
            AccessLogFormat::Json => {
                if !self.first {
                    self.out.push(b',');
                }
                self.out.push(b'"');
                self.out.extend_from_slice(key.as_bytes());
                self.out.extend_from_slice(b"\":");
            }
            AccessLogFormat::Logfmt => {
                if !self.first {
                    self.out.push(b' ');
                }
                self.out.extend_from_slice(key.as_bytes());
                self.out.push(b'=');
            }
        }
        self.first = false;
    }

    /// A string value, escaped for the format.
    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        match self.format {
            // Writing a string into a Vec cannot fail.
            AccessLogFormat::Json => {
                let _ = serde_json::to_writer(&mut *self.out, value);
            }
            AccessLogFormat::Logfmt => logfmt_value(self.out, value),
        }
    }

    /// A value written as it displays: numbers and addresses (quoted in JSON unless
    /// a number).
    fn display(&mut self, key: &str, value: impl std::fmt::Display) {
        let mut text = Vec::new();
        let _ = write!(text, "{value}");
        let numeric = text.iter().all(|b| b.is_ascii_digit() || *b == b'.') && !text.is_empty();
        if numeric || self.format == AccessLogFormat::Logfmt {
            self.key(key);
            self.out.extend_from_slice(&text);
        } else {
            self.str(key, &String::from_utf8_lossy(&text));
        }
    }

    /// A list of strings: a JSON array, or comma-separated in logfmt.
    fn list(&mut self, key: &str, values: &[String]) {
        match self.format {
            AccessLogFormat::Json => {
                self.key(key);
                let _ = serde_json::to_writer(&mut *self.out, values);
            }
            AccessLogFormat::Logfmt => self.str(key, &values.join(",")),
        }
    }

    fn end(self) {
        if self.format == AccessLogFormat::Json {
            self.out.push(b'}');
        }
        self.out.push(b'\n');
    }
}

/// A logfmt value: bare when it is plain, else quoted with `\` escapes, so a value can
/// never end its field or its line.
fn logfmt_value(out: &mut Vec<u8>, value: &str) {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\');
    if plain {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    out.push(b'"');
    for c in value.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use apigate_control::snapshot::AccessLogSettings;
    use http::{HeaderValue, Method, Uri};

    use super::*;
    use crate::balance::BackendState;
    use crate::conn::ClientAuth;
    use crate::identity::Identity;

    /// A copy of `entry` (entries are moved into the log, so tests make several).
    pub(crate) fn entry_like(entry: &Entry) -> Entry {
        let mut copy = self::entry(entry.settings.format);
        copy.settings = entry.settings.clone();
        copy
    }

    /// A request with every field set.
    pub(crate) fn entry(format: AccessLogFormat) -> Entry {
        Entry {
            settings: Arc::new(AccessLogSettings {
                format,
                success_sample_ratio: 1.0,
                always_log_errors: true,
                path: None,
            }),
            time: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            route: Arc::from("shoot--a/api"),
            listener: Arc::from("tls"),
            client: "[2001:db8::7]:4242".parse().unwrap(),
            peer: "10.0.0.1:5555".parse().unwrap(),
            auth: ClientAuth::Verified(Identity {
                user: "alice \"the admin\"".into(),
                groups: vec!["system:masters".into(), "dev".into()],
            }),
            authorization: None,
            protocol: "HTTP/2",
            request: Some((
                Method::GET,
                Uri::from_static("/api/v1/namespaces/d/pods?watch=1&labelSelector=a%3Db"),
            )),
            upgrade: false,
            status: 200,
            answered: None,
            duration: Duration::from_micros(1_500_250),
            bytes_in: 0,
            bytes_out: 4096,
            backend: Some(Arc::new(BackendState::new(
                "127.0.0.1:6443".parse().unwrap(),
            ))),
            retries: 1,
            audit_id: Some(HeaderValue::from_static(
                "5e0b9d3a-0000-4000-8000-000000000001",
            )),
        }
    }

    fn render_str(entry: &Entry) -> String {
        let mut out = Vec::new();
        render(entry, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_json_line_carries_every_field() {
        let text = render_str(&entry(AccessLogFormat::Json));
        assert!(
            text.ends_with("}\n") && text.matches('\n').count() == 1,
            "{text}"
        );
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        let want = serde_json::json!({
            "log": "access",
            "time": "2026-11-18T11:06:40.123Z",
            "route": "shoot--a/api",
            "listener": "tls",
            "client": "[2001:db8::7]:4242",
            "peer": "10.0.0.1:5555",
            "user": "alice \"the admin\"",
            "groups": ["system:masters", "dev"],
            "protocol": "HTTP/2",
            "method": "GET",
            "uri": "/api/v1/namespaces/d/pods?watch=1&labelSelector=a%3Db",
            "verb": "watch",
            "resource": "pods",
            "namespace": "d",
            "status": 200,
            "duration_seconds": 1.50025,
            "bytes_in": 0,
            "bytes_out": 4096,
            "backend": "127.0.0.1:6443",
            "retries": 1,
            "audit_id": "5e0b9d3a-0000-4000-8000-000000000001",
        });
        assert_eq!(line, want);
    }

    #[test]
    fn a_token_user_is_named_by_hash_and_logfmt_quotes_what_needs_it() {
        let mut entry = entry(AccessLogFormat::Logfmt);
        entry.auth = ClientAuth::Anonymous;
        entry.authorization = Some(HeaderValue::from_static("Bearer secret-token"));
        entry.route = Arc::from("a b=\"c\"\nd");
        entry.status = 0;
        entry.answered = Some("no_backend");
        let text = render_str(&entry);
        assert_eq!(
            text.matches('\n').count(),
            1,
            "one line whatever the values: {text}"
        );
        assert!(text.contains("user=token:930bbdc51b6aed5c "), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains(r#"route="a b=\"c\"\nd" "#), "{text}");
        assert!(
            text.contains(" status=0 answered_by_apigate=no_backend "),
            "{text}"
        );
        assert!(text.contains(" duration_seconds=1.500250 "), "{text}");
        entry.auth = ClientAuth::Anonymous;
        entry.authorization = None;
        assert!(render_str(&entry).contains(" user=anonymous "));
    }
}
