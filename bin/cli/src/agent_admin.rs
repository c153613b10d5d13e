//! `rmm agents revoke|rotate-key|move|rename`: admins' changes to an agent, named by its id or
//! its name as `rmm agents` lists it.

use std::io::Write as _;

use clap::Subcommand;
use rmm_client::ApiClient;
use serde::Serialize;

use crate::CliError;
use crate::commands::resolve_agent;
use crate::render::print_json;

/// What `rmm agents` does besides listing.
#[derive(Debug, Subcommand)]
pub enum AgentsAction {
    /// Revoke an agent (admins): its key is refused from then on, its connection and open
    /// session are closed; it stays listed with its history.
    Revoke {
        /// The agent: its id, or its name.
        agent: String,
        /// Print JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Give an agent a new key (admins), printed once; the old key stops working at once.
    RotateKey {
        /// The agent: its id, or its name.
        agent: String,
        /// Print JSON instead of the key alone.
        #[arg(long)]
        json: bool,
    },
    /// Move an agent to another group (admins).
    Move {
        /// The agent: its id, or its name.
        agent: String,
        /// The name of the group to move it to.
        #[arg(long)]
        group: String,
        /// Print JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Rename an agent (admins).
    Rename {
        /// The agent: its id, or its name.
        agent: String,
        /// Its new name.
        new_name: String,
        /// Print JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct Revoked {
    agent_id: uuid::Uuid,
    name: String,
    revoked: bool,
}

fn say(line: &str) -> Result<(), CliError> {
    writeln!(std::io::stdout(), "{line}")
        .map_err(|e| CliError::Local(format!("cannot write to stdout: {e}")))
}

/// Runs one of [`AgentsAction`].
///
/// # Errors
/// [`CliError::Usage`] when no agent or several match; client errors.
pub async fn run(client: &ApiClient, action: AgentsAction) -> Result<(), CliError> {
    match action {
        AgentsAction::Revoke { agent, json } => {
            let agent = resolve_agent(client, &agent).await?;
            client.revoke_agent(agent.id()).await?;
            if json {
                return print_json(&Revoked {
                    agent_id: agent.agent_id,
                    name: agent.name,
                    revoked: true,
                });
            }
            say(&format!("revoked {} ({})", agent.name, agent.agent_id))
        }
        AgentsAction::RotateKey { agent, json } => {
            let agent = resolve_agent(client, &agent).await?;
            let rotated = client.rotate_agent_key(agent.id()).await?;
            if json {
                return print_json(&rotated);
            }
            let _ = writeln!(
                std::io::stderr(),
                "New key for {} ({}); it is shown only now, the old key no longer works:",
                agent.name,
                agent.agent_id
            );
            say(&rotated.agent_key)
        }
        AgentsAction::Move { agent, group, json } => {
            let agent = resolve_agent(client, &agent).await?;
            let updated = client.update_agent(agent.id(), None, Some(&group)).await?;
            if json {
                return print_json(&updated);
            }
            say(&format!(
                "moved {} to group {}",
                updated.name, updated.group
            ))
        }
        AgentsAction::Rename {
            agent,
            new_name,
            json,
        } => {
            let agent = resolve_agent(client, &agent).await?;
            let updated = client
                .update_agent(agent.id(), Some(&new_name), None)
                .await?;
            if json {
                return print_json(&updated);
            }
            say(&format!("renamed {} to {}", agent.name, updated.name))
        }
    }
}
