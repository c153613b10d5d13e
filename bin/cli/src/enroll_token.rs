//! `rmm enroll-token create | list | revoke`: the enrollment tokens machines register with
//! (admins).

use std::time::Duration;

use chrono::Utc;
use clap::{Args, Subcommand};
use rmm_client::ApiClient;
use uuid::Uuid;

use super::CliError;
use super::render::{Table, print_json, print_stdout, time};

#[derive(Debug, Args)]
pub struct EnrollTokenArgs {
    #[command(subcommand)]
    command: EnrollTokenCommand,
}

#[derive(Debug, Subcommand)]
enum EnrollTokenCommand {
    /// Create a token; prints it (shown once) and the two-line install for a machine.
    Create {
        /// The group the enrolled agents join.
        #[arg(long)]
        group: String,
        /// How many machines may enroll with it (1 to 10000).
        #[arg(long)]
        uses: Option<u32>,
        /// How long it lasts: 90s, 30m, 24h, 7d (1 minute to 30 days; default 24h).
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the tokens, newest first (never the tokens themselves).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: it enrolls no further machine (agents enrolled with it stay).
    Revoke {
        /// The token's id (from `list`).
        id: Uuid,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `90s`, `30m`, `24h`, `7d`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90s, 30m, 24h or 7d"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("{text:?} is not a duration such as 90s, 30m, 24h or 7d"))?;
    Ok(Duration::from_secs(secs))
}

/// Runs one `enroll-token` subcommand.
///
/// # Errors
/// Client errors (a non-admin is forbidden; an unknown group is a bad request naming it).
pub async fn run(client: &ApiClient, args: EnrollTokenArgs) -> Result<(), CliError> {
    match args.command {
        EnrollTokenCommand::Create {
            group,
            uses,
            expires,
            json,
        } => {
            let created = client
                .create_enrollment(&group, uses, expires.map(|d| d.as_secs()))
                .await?;
            if json {
                return print_json(&created);
            }
            let server = client.server().trim_end_matches('/');
            print_stdout(&format!(
                "Enrollment token {} for group {group} ({} use{}, expires {}); shown only now:\n\
                 {}\n\nOn each machine (as root):\n  \
                 rmm-agent enroll --server {server} --token {}\n  \
                 systemctl enable --now rmm-agent\n",
                created.enrollment_id,
                uses.unwrap_or(1),
                if uses.unwrap_or(1) == 1 { "" } else { "s" },
                time(created.expires_at),
                created.token,
                created.token,
            ))
        }
        EnrollTokenCommand::List { json } => {
            let list = client.enrollments().await?;
            if json {
                return print_json(&list);
            }
            let now = Utc::now();
            let mut table = Table::new(&["ID", "GROUP", "USES", "EXPIRES", "STATE"]);
            for e in &list {
                let state = if e.revoked {
                    "revoked"
                } else if e.expires_at <= now {
                    "expired"
                } else if e.uses >= e.uses_allowed {
                    "used up"
                } else {
                    "active"
                };
                table.row(vec![
                    e.enrollment_id.to_string(),
                    e.group.clone(),
                    format!("{}/{}", e.uses, e.uses_allowed),
                    time(e.expires_at),
                    state.to_owned(),
                ]);
            }
            table.print()
        }
        EnrollTokenCommand::Revoke { id, json } => {
            client.revoke_enrollment(id).await?;
            if json {
                return print_json(&serde_json::json!({ "enrollment_id": id, "revoked": true }));
            }
            print_stdout(&format!("Enrollment token {id} revoked.\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_of_seconds_minutes_hours_or_days() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
