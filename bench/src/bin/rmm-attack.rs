//! `rmm-attack`: the attacks of the "Internet-facing hardening" issue against a real
//! `rmm-server`, each on a fresh server at a soft open-file limit of 1024, printed beside the
//! figures the issue reported for the server before the hardening (stated constants: that
//! server is not rebuilt here). Loopback only; every loop is bounded. See bench/README.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rmm_bench::attack::{self, Target};

/// Attack a local rmm-server the way the hardening issue did and print before/after figures.
#[derive(Debug, Parser)]
#[command(name = "rmm-attack")]
struct Cli {
    /// The rmm-server binary (default: rmm-server beside this program).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Size of each of the three JSON bodies, MiB.
    #[arg(long, default_value_t = 64)]
    body_mib: u64,
    /// Concurrent logins of the login flood (the issue: 128; the requirement: 200).
    #[arg(long, value_delimiter = ',', default_value = "128,200")]
    logins: Vec<usize>,
    /// Half-sent requests of the slowloris attack.
    #[arg(long, default_value_t = 1100)]
    slow: usize,
    /// Wrong passwords a second in the brute-force attack.
    #[arg(long, default_value_t = 30)]
    brute_rate: u32,
    /// Seconds the brute-force attack lasts.
    #[arg(long, default_value_t = 60)]
    brute_secs: u64,
}

/// Systemd's default soft open-file limit, which the attacks ran under.
const SOFT_NOFILE: u64 = 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    rmm_bench::api::init_crypto();
    let server = attack::server_binary(cli.server.clone())?;
    rmm_bench::limits::raise_nofile(cli.slow as u64 + 1024)?;
    let load_start = attack::load_average();
    println!("# Front-door attacks: before (issue text) and now (measured)\n");
    println!(
        "server: {}\nsoft open-file limit at start: {SOFT_NOFILE}\nload average at start: {load_start}\n",
        server.display()
    );
    println!("| attack | before (as the issue reports it) | now (measured) |\n|---|---|---|");

    let target = Target::start(&server, SOFT_NOFILE, &[]).await?;
    let flood = attack::body_flood(&target, cli.body_mib * 1024 * 1024).await?;
    target.stop().await;
    println!(
        "| 3 concurrent {} MiB JSON bodies to `POST /api/v1/auth/login`: RSS before → peak | 232 MiB → 2.47 GiB, then 401 | {} MiB → {} MiB; answered {:?}; client got {:?} MiB of each in before the server stopped reading |",
        cli.body_mib, flood.rss_before_mib, flood.peak_mib, flood.statuses, flood.sent_mib
    );

    for &n in &cli.logins {
        let target = Target::start(&server, SOFT_NOFILE, &[]).await?;
        let flood = attack::login_flood(&target, n).await?;
        target.stop().await;
        let before = if n == 128 {
            "8.3 GiB peak, ~7.9 GiB held afterwards"
        } else {
            "not reported (128: 8.3 GiB)"
        };
        let health = flood.slowest_health.map_or_else(
            || "no answer within 5 s".to_owned(),
            |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0),
        );
        println!(
            "| {n} concurrent logins: peak RSS, RSS afterwards | {before} | {} MiB peak, {} MiB afterwards; {} logged in, {} told 503 + Retry-After, {} other, in {:.1} s; slowest /healthz meanwhile {health} |",
            flood.peak_mib,
            flood.after_mib,
            flood.ok,
            flood.busy,
            flood.other,
            flood.took.as_secs_f64()
        );
    }

    let target = Target::start(&server, SOFT_NOFILE, &[]).await?;
    let wait = Duration::from_secs(30);
    let slow = attack::slowloris(&target, cli.slow, wait).await?;
    target.stop().await;
    let fresh = slow.fresh.map_or_else(
        || "no answer within 10 s".to_owned(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0),
    );
    let closed = slow.all_closed_after.map_or_else(
        || format!("some still open after {} s", wait.as_secs()),
        |d| {
            format!(
                "all closed by the server {:.1} s after the attack began",
                d.as_secs_f64()
            )
        },
    );
    println!(
        "| {} half-sent requests (slowloris): a fresh request answered in | timed out; every descriptor held 45 s+; agents could not reconnect | {fresh}; {} opened; {closed}; peak RSS {} MiB |",
        cli.slow, slow.opened, slow.peak_mib
    );

    let target = Target::start(&server, SOFT_NOFILE, &[]).await?;
    let brute =
        attack::brute_force(&target, cli.brute_rate, Duration::from_secs(cli.brute_secs)).await?;
    target.stop().await;
    println!(
        "| wrong passwords for one username at ~{}/s for {} s: logins checked per minute | ~1,800 (every one of 260 checked; then the right password → 200) | {:.1} ({} checked, {} refused 429, first Retry-After {} s); then the right password → {} |",
        cli.brute_rate,
        cli.brute_secs,
        brute.per_minute,
        brute.checked,
        brute.throttled,
        brute
            .retry_after
            .map_or_else(|| "-".to_owned(), |s| s.to_string()),
        brute.right_password
    );
    println!("\nload average at the end: {}", attack::load_average());
    Ok(())
}
