//! The Kubernetes-like HTTP requests of a scenario, prepared once per target so building
//! one per send is cheap: `GET` of one pod, `LIST` with `limit`, `POST` of a pod, merge
//! `PATCH`, and watches of the pod collection.

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request};
use http_body_util::Full;
use rand::Rng;

use crate::scenario::{Op, Protocol, Scenario, ScenarioError};

/// Builds the HTTP requests of a scenario for one target: holds the prepared URL prefix,
/// `Host`/authority and auth header, so building a request is cheap.
#[derive(Debug, Clone)]
pub struct RequestFactory {
    /// `https://host:port` for HTTP/2 (absolute form), empty for HTTP/1.1 (origin form).
    prefix: String,
    host: HeaderValue,
    auth: Option<HeaderValue>,
    collection: String,
    list_size: u32,
    objects: u32,
    create_body: Bytes,
}

impl RequestFactory {
    /// Prepares requests for `authority` (`host:port`) with the given scheme.
    pub fn new(
        scenario: &Scenario,
        scheme: &str,
        authority: &str,
        token: Option<&str>,
    ) -> Result<Self, ScenarioError> {
        let host = HeaderValue::from_str(authority).map_err(|_| {
            ScenarioError::Invalid(format!(
                "target authority {authority:?} is not a valid Host"
            ))
        })?;
        let auth = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| {
                ScenarioError::Invalid("--token contains characters not allowed in a header".into())
            })?;
        let prefix = match scenario.protocol {
            Protocol::H2 => format!("{scheme}://{authority}"),
            Protocol::H1 => String::new(),
        };
        let padding = "x".repeat(scenario.body_bytes.saturating_sub(240));
        // No service-account token to mount: a real API server then admits the pod
        // without the token controller (an API-server-only testbed has none).
        let create_body = Bytes::from(format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"generateName":"loadtest-","annotations":{{"apigate-loadtest/padding":"{padding}"}}}},"spec":{{"automountServiceAccountToken":false,"containers":[{{"name":"c","image":"registry.invalid/pause:3"}}]}}}}"#
        ));
        Ok(Self {
            prefix,
            host,
            auth,
            collection: format!("/api/v1/namespaces/{}/pods", scenario.namespace),
            list_size: scenario.list_size,
            objects: scenario.objects,
            create_body,
        })
    }

    /// Builds the request for `op`; `rng` picks the object name.
    pub fn build<R: Rng>(&self, op: Op, rng: &mut R) -> Result<Request<Full<Bytes>>, http::Error> {
        let name = rng.gen_range(0..self.objects);
        let (method, path, body, ctype) = match op {
            Op::Get => (
                Method::GET,
                format!("{}/pod-{name}", self.collection),
                Bytes::new(),
                None,
            ),
            Op::List => (
                Method::GET,
                format!("{}?limit={}", self.collection, self.list_size),
                Bytes::new(),
                None,
            ),
            Op::Create => (
                Method::POST,
                self.collection.clone(),
                self.create_body.clone(),
                Some("application/json"),
            ),
            Op::Patch => (
                Method::PATCH,
                format!("{}/pod-{name}", self.collection),
                Bytes::from(format!(
                    r#"{{"metadata":{{"labels":{{"apigate-loadtest":"{}"}}}}}}"#,
                    rng.gen::<u32>()
                )),
                Some("application/merge-patch+json"),
            ),
        };
        self.finish(method, &path, body, ctype)
    }

    /// Builds a watch request on the pod collection; the server is asked to keep it open
    /// for `timeout_secs`.
    pub fn watch(&self, timeout_secs: u64) -> Result<Request<Full<Bytes>>, http::Error> {
        let path = format!(
            "{}?watch=true&timeoutSeconds={timeout_secs}",
            self.collection
        );
        self.finish(Method::GET, &path, Bytes::new(), None)
    }

    /// Builds a plain GET of an arbitrary path (used by scrapes).
    pub fn get(&self, path: &str) -> Result<Request<Full<Bytes>>, http::Error> {
        self.finish(Method::GET, path, Bytes::new(), None)
    }

    fn finish(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        ctype: Option<&'static str>,
    ) -> Result<Request<Full<Bytes>>, http::Error> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.prefix, path));
        if self.prefix.is_empty() {
            b = b.header(HOST, self.host.clone());
        }
        if let Some(a) = &self.auth {
            b = b.header(AUTHORIZATION, a.clone());
        }
        if let Some(ct) = ctype {
            b = b.header(CONTENT_TYPE, ct);
        }
        b = b
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "apigate-loadtest");
        b.body(Full::new(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn scenario() -> Scenario {
        crate::scenario::test_scenario(1, 1.0)
    }

    #[test]
    fn requests_have_kube_shape() -> Result<(), Box<dyn std::error::Error>> {
        let s = scenario();
        let f = RequestFactory::new(&s, "https", "127.0.0.1:6443", Some("tok"))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let r = f.build(Op::List, &mut rng)?;
        assert_eq!(
            r.uri().to_string(),
            "https://127.0.0.1:6443/api/v1/namespaces/default/pods?limit=50"
        );
        assert_eq!(r.headers()["authorization"], "Bearer tok");
        let r = f.build(Op::Patch, &mut rng)?;
        assert_eq!(r.method(), Method::PATCH);
        assert_eq!(r.headers()["content-type"], "application/merge-patch+json");
        let mut h1 = s.clone();
        h1.protocol = Protocol::H1;
        let f = RequestFactory::new(&h1, "https", "example:443", None)?;
        let r = f.watch(30)?;
        assert_eq!(
            r.uri().to_string(),
            "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=30"
        );
        assert_eq!(r.headers()["host"], "example:443");
        Ok(())
    }
}
