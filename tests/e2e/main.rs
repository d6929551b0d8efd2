//! End-to-end scenarios through apigate against a real HA kube-apiserver (3 replicas,
//! one etcd, `--requestheader-*` front-proxy authentication, RBAC, a fake kubelet for
//! `kubectl exec`) and kubectl 1.20. The scenarios live in `scenarios/`, by topic.
//!
//! Needs `tests/testbed/testbed.sh install` (the README's test command runs it).
//! Prints `test NAME ... ok|FAILED` per scenario (scenarios made of steps print each
//! step too), the failures again at the end, and a closing `N passed, N failed` line.
//! An argument runs only the scenarios whose name contains it.

mod scenarios;

use std::sync::Arc;
use std::time::Instant;

use apigate_e2e::{Gateway, Testbed};
use scenarios::Ctx;

fn main() -> std::process::ExitCode {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("APIGATE_LOG").unwrap_or_else(|_| "warn".into()))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let (passed, failed) = runtime.block_on(run(filter));
    println!(
        "{passed} passed, {failed} failed ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

async fn run(filter: Option<String>) -> (usize, usize) {
    println!("e2e: bringing up the testbed (etcd + 3 kube-apiserver replicas + fake kubelet)");
    let up = Instant::now();
    let testbed = match apigate_e2e::blocking(Testbed::up) {
        Ok(t) => t,
        Err(e) => {
            println!("e2e: {e:#}");
            return (0, 1);
        }
    };
    println!("e2e: testbed up in {:.1}s", up.elapsed().as_secs_f64());
    let gateway = match Gateway::start(&testbed).await {
        Ok(g) => g,
        Err(e) => {
            println!("e2e: starting apigate: {e:#}");
            return (0, 1); // Testbed::drop brings the testbed down.
        }
    };
    let ctx = Arc::new(Ctx { testbed, gateway });
    // Ctrl-C: still bring the testbed down (its processes are not our children).
    let interrupted = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                println!("e2e: interrupted; bringing the testbed down");
                ctx.testbed.down();
                std::process::exit(130);
            }
        })
    };
    let (mut passed, mut failures) = (0, Vec::new());
    for scenario in scenarios::all() {
        if filter
            .as_deref()
            .is_some_and(|f| !scenario.name.contains(f))
        {
            continue;
        }
        let name = scenario.name;
        let started = Instant::now();
        let mut task = tokio::spawn((scenario.run)(ctx.clone()));
        let outcome = match tokio::time::timeout(scenario.limit, &mut task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("{e:#}")),
            Ok(Err(join)) => Err(format!("panicked: {join}")),
            Err(_) => {
                // Nothing of it may run on into the next scenario (a blocking
                // kubectl call inside it ends within 60 s).
                task.abort();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(70), task).await;
                Err(format!("timed out after {:?}", scenario.limit))
            }
        };
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({secs:.1}s)");
            }
            Err(e) => {
                println!("test {name} ... FAILED ({secs:.1}s)\n    {e}");
                failures.push((name, e));
            }
        }
    }
    interrupted.abort();
    let _ = interrupted.await;
    if !failures.is_empty() {
        println!("\nfailures:");
        for (name, e) in &failures {
            println!("  {name}: {e}");
        }
        println!();
    }
    match Arc::try_unwrap(ctx) {
        Ok(mut ctx) => {
            ctx.gateway.stop().await;
            drop(ctx); // Testbed::drop brings the testbed down.
        }
        // A scenario task still holds it (it did not stop when aborted): bring the
        // testbed down anyway; apigate ends with the process.
        Err(ctx) => ctx.testbed.down(),
    }
    (passed, failures.len())
}
