//! `apigate-loadtest` binary: parses the command line, starts a Tokio runtime and runs
//! the chosen subcommand. Exit codes: 0 thresholds met, 1 could not run, 2 usage error,
//! 3 thresholds missed.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apigate_loadtest::backend::{Backend, BackendOptions};
use apigate_loadtest::cli::{BackendArgs, Cli, Command, CompareArgs, L4Args, RunArgs};
use apigate_loadtest::compare::compare;
use apigate_loadtest::l4::L4Baseline;
use apigate_loadtest::report::{html, json, terminal};
use apigate_loadtest::runner;
use apigate_loadtest::verdict::EXIT_THRESHOLD_MISSED;
use clap::{CommandFactory, Parser};

fn usage_error(msg: impl std::fmt::Display) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ValueValidation, msg)
        .exit()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|e| usage_error(format!("--log: {e}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let rt = if cli.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Compare(args) => run_compare(args).await,
            Command::Backend(args) => backend(args).await,
            Command::L4Baseline(args) => l4(args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn emit(json_text: Option<String>, summary: &str) -> anyhow::Result<()> {
    match json_text {
        Some(j) => {
            eprint!("{summary}");
            let mut out = std::io::stdout().lock();
            writeln!(out, "{j}").context("writing JSON to stdout")?;
        }
        None => print!("{summary}"),
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let common = &args.common;
    let scenario = Arc::new(common.load.scenario().unwrap_or_else(|e| usage_error(e)));
    let name = args.name.clone().unwrap_or_else(|| args.target.to_string());
    let mut plan = common.plan(name, args.target.clone(), scenario);
    plan.actions = args.actions.clone();
    if let Some(neighbor) = args.neighbor.plan(&plan) {
        let neighbor = neighbor.unwrap_or_else(|e| usage_error(format!("neighbour group: {e}")));
        return run_with_neighbor(common, &plan, &neighbor).await;
    }
    let report = runner::run(&plan).await?;
    let summary = terminal::run_summary(&report);
    let json_text = if common.output.json {
        Some(json::run_json(&report)?)
    } else {
        None
    };
    emit(json_text, &summary)?;
    if let Some(path) = &common.output.report {
        html::write(path, std::slice::from_ref(&report), &summary)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(if report.verdict.passed {
        0
    } else {
        EXIT_THRESHOLD_MISSED as u8
    })
}

/// `run` with a neighbour group: both at once, reported apart (the JSON is a
/// comparison of the two runs, the main group first). The verdict is the main group's.
async fn run_with_neighbor(
    common: &apigate_loadtest::cli::ScenarioArgs,
    plan: &runner::RunPlan,
    neighbor: &runner::RunPlan,
) -> anyhow::Result<u8> {
    let (main, other) = tokio::join!(runner::run(plan), runner::run(neighbor));
    let (main, other) = (main?, other?);
    let passed = main.verdict.passed;
    let mut summary = terminal::run_summary(&main);
    summary.push_str(&terminal::run_summary(&other));
    let report = apigate_loadtest::report::CompareReport {
        schema: apigate_loadtest::report::COMPARE_SCHEMA.to_owned(),
        scenario: serde_json::to_value(&*plan.scenario).unwrap_or(serde_json::Value::Null),
        runs: vec![main, other],
        passed,
    };
    write_compare(common, &report, &summary)
}

/// Print (and write, when asked) several runs' report; the exit code from its verdict.
fn write_compare(
    common: &apigate_loadtest::cli::ScenarioArgs,
    report: &apigate_loadtest::report::CompareReport,
    summary: &str,
) -> anyhow::Result<u8> {
    let json_text = if common.output.json {
        Some(json::compare_json(report)?)
    } else {
        None
    };
    emit(json_text, summary)?;
    if let Some(path) = &common.output.report {
        html::write(path, &report.runs, summary)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(if report.passed {
        0
    } else {
        EXIT_THRESHOLD_MISSED as u8
    })
}

async fn run_compare(args: CompareArgs) -> anyhow::Result<u8> {
    let common = &args.common;
    let scenario = Arc::new(common.load.scenario().unwrap_or_else(|e| usage_error(e)));
    let mut names = std::collections::BTreeSet::new();
    for t in &args.targets {
        if !names.insert(t.name.as_str()) {
            usage_error(format!("--target name {:?} given twice", t.name));
        }
    }
    let plans: Vec<_> = args
        .targets
        .iter()
        .map(|t| common.plan(t.name.clone(), t.target.clone(), Arc::clone(&scenario)))
        .collect();
    let report = compare(&plans, args.pause).await?;
    let mut summary = String::new();
    for r in &report.runs {
        summary.push_str(&terminal::run_summary(r));
    }
    summary.push('\n');
    summary.push_str(&terminal::compare_table(&report));
    write_compare(common, &report, &summary)
}

/// Waits for SIGINT/SIGTERM or `run_for`.
async fn wait_for_stop(run_for: Option<Duration>) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    let limit = async {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
        _ = limit => {},
    }
    Ok(())
}

async fn backend(args: BackendArgs) -> anyhow::Result<u8> {
    let opts = BackendOptions {
        replicas: args.replicas,
        host: args.host,
        service_time: args.service_time,
        list_size: args.list_size,
        object_bytes: args.object_bytes,
        watch_event_interval: args.watch_event_interval,
        plain: args.plain,
        san: args.san.clone(),
        out_dir: args.out_dir.clone(),
        admin: args.admin,
    };
    let b = Backend::start(opts)
        .await
        .context("starting the fake replicas")?;
    print!("{}", b.describe(args.out_dir.as_deref()));
    std::io::stdout().flush().context("stdout")?;
    let waited = wait_for_stop(args.run_for).await;
    b.shutdown().await;
    waited?;
    Ok(0)
}

async fn l4(args: L4Args) -> anyhow::Result<u8> {
    let lb = L4Baseline::start(args.listen, args.backends.clone()).await?;
    println!(
        "l4-baseline (TCP round robin per connection) listening on {} -> {:?}",
        lb.local_addr(),
        args.backends
    );
    std::io::stdout().flush().context("stdout")?;
    if let Some(f) = &args.addr_file {
        std::fs::write(f, lb.local_addr().to_string())
            .with_context(|| format!("writing {}", f.display()))?;
    }
    let waited = wait_for_stop(args.run_for).await;
    lb.shutdown().await;
    waited?;
    Ok(0)
}
