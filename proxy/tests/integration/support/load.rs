//! Steady load on a route while a test changes something under it: four HTTP/2 clients
//! in a closed loop on long-lived connections, and a new connection every 20 ms (so
//! admission and the handshake run against every configuration). Bounded in count;
//! any answer but 200 (a 401 included) is a failure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apigate_fake_apiserver::pki::Issued;
use apigate_test_support::client::{ClientTls, H2Client};

use super::Harness;

/// The load's tasks and what they saw.
pub struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Start it against `h`'s listener, presenting `cert` (if any) on every connection.
    pub async fn start(h: &Harness, cert: Option<&Issued>) -> Load {
        let load = Load {
            stop: Arc::default(),
            served: Arc::default(),
            failures: Arc::default(),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let client = h.h2(cert).await;
            let (stop, served, failures) = load.handles();
            tasks.push(tokio::spawn(async move {
                for _ in 0..200_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = client.get("/api/v1/namespaces/default/pods", &[]).await;
                    record(&served, &failures, result.map(|r| r.status), "");
                }
            }));
        }
        let (addr, tls): (SocketAddr, ClientTls) = (h.addr(), h.tls(cert));
        let (stop, served, failures) = load.handles();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let result = match H2Client::connect(addr, &tls).await {
                    Ok(client) => client.get("/version", &[]).await.map(|r| r.status),
                    Err(e) => Err(e),
                };
                record(&served, &failures, result, "new connection: ");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
        Load { tasks, ..load }
    }

    fn handles(&self) -> (Arc<AtomicBool>, Arc<AtomicU64>, Arc<Mutex<Vec<String>>>) {
        (
            self.stop.clone(),
            self.served.clone(),
            self.failures.clone(),
        )
    }

    /// Stop it; the requests served and the failures seen.
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.served.load(Ordering::Relaxed), failures)
    }
}

fn record<E: std::fmt::Display>(
    served: &AtomicU64,
    failures: &Mutex<Vec<String>>,
    result: Result<u16, E>,
    what: &str,
) {
    match result {
        Ok(200) => {
            served.fetch_add(1, Ordering::Relaxed);
        }
        Ok(status) => failures
            .lock()
            .unwrap()
            .push(format!("{what}status {status}")),
        Err(e) => failures.lock().unwrap().push(format!("{what}{e}")),
    }
}
