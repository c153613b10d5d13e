//! `rmm-server user ...`: managing users from the server's console, on the database the
//! server uses (the same default when `DATABASE_URL` is unset). A running server sees each
//! change on its next request (tokens are checked against the database every time) and
//! closes a disabled user's sessions within 2 s.

use std::io::BufRead;

use anyhow::{Context, bail};
use clap::Subcommand;
use rmm_application::{App, CreateUserError, Ports, UserAdminError, UserRecord, UserUpdate};
use rmm_domain::{Role, Username};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users (not deleted ones).
    List,
    /// Create a user; the password is read from the first line of standard input.
    Add {
        #[arg(long)]
        username: String,
        /// Read the password from standard input (required: passwords never go in argv).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// `admin`, `technician` or `auditor`.
        #[arg(long, default_value = "technician", conflicts_with = "admin")]
        role: String,
        /// Make the user an admin (the same as `--role admin`).
        #[arg(long)]
        admin: bool,
    },
    /// Disable a user: they cannot log in, their tokens fail at once, their tunnels close.
    Disable {
        #[arg(long)]
        username: String,
    },
    /// Enable a disabled user.
    Enable {
        #[arg(long)]
        username: String,
    },
    /// Delete a user: as disable, and no longer listed; their audit history stays.
    Delete {
        #[arg(long)]
        username: String,
    },
    /// Set a user's password (the way to reset a lost admin password), read from the first
    /// line of standard input. Every token of theirs is revoked.
    Passwd {
        #[arg(long)]
        username: String,
        /// Read the password from standard input (required: passwords never go in argv).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Change a user's role.
    SetRole {
        #[arg(long)]
        username: String,
        /// `admin`, `technician` or `auditor`.
        #[arg(long)]
        role: String,
    },
}

/// Runs one console command against `app`'s database (named by `database` in what it prints).
///
/// # Errors
/// A message naming the cause and what to do.
pub async fn run<P: Ports>(
    app: &App<P>,
    database: &str,
    command: UserCommand,
) -> anyhow::Result<()> {
    eprintln!("database: {database}");
    match command {
        UserCommand::List => list(app).await,
        UserCommand::Add {
            username,
            role,
            admin,
            ..
        } => {
            let role = if admin {
                Role::Admin
            } else {
                Role::parse(&role)?
            };
            add(app, &username, role).await
        }
        UserCommand::Disable { username } => set_disabled(app, &username, true).await,
        UserCommand::Enable { username } => set_disabled(app, &username, false).await,
        UserCommand::Delete { username } => {
            let user = find(app, &username).await?;
            app.delete_user(None, user.id).await.map_err(explain)?;
            println!("deleted {username} ({})", user.id);
            Ok(())
        }
        UserCommand::Passwd { username, .. } => {
            let password = read_password()?;
            let update = UserUpdate {
                password: Some(password),
                ..UserUpdate::default()
            };
            change(
                app,
                &username,
                update,
                "password set; every token of theirs is revoked",
            )
            .await
        }
        UserCommand::SetRole { username, role } => {
            let role = Role::parse(&role)?;
            let update = UserUpdate {
                role: Some(role),
                ..UserUpdate::default()
            };
            change(
                app,
                &username,
                update,
                &format!("role set to {}", role.as_str()),
            )
            .await
        }
    }
}

async fn set_disabled<P: Ports>(
    app: &App<P>,
    username: &str,
    disabled: bool,
) -> anyhow::Result<()> {
    let update = UserUpdate {
        disabled: Some(disabled),
        ..UserUpdate::default()
    };
    let done = if disabled {
        "disabled; their tokens fail at once and their tunnels close"
    } else {
        "enabled"
    };
    change(app, username, update, done).await
}

async fn list<P: Ports>(app: &App<P>) -> anyhow::Result<()> {
    let users = app.list_users(None).await.map_err(explain)?;
    println!(
        "{:<24} {:<11} {:<8} {:<36}",
        "USERNAME", "ROLE", "STATE", "USER ID"
    );
    for user in users {
        let state = if user.disabled { "disabled" } else { "enabled" };
        println!(
            "{:<24} {:<11} {:<8} {}",
            user.username.as_str(),
            user.role.as_str(),
            state,
            user.id
        );
    }
    Ok(())
}

async fn add<P: Ports>(app: &App<P>, username: &str, role: Role) -> anyhow::Result<()> {
    let username = Username::parse(username)?;
    let password = read_password()?;
    match app
        .create_user(None, username.clone(), &password, role)
        .await
    {
        Ok(id) => {
            println!("created {} {username} ({id})", role.as_str());
            Ok(())
        }
        Err(e @ (CreateUserError::Taken(_) | CreateUserError::WeakPassword)) => bail!("{e}"),
        Err(e) => Err(anyhow::Error::new(e).context("could not create the user")),
    }
}

async fn change<P: Ports>(
    app: &App<P>,
    username: &str,
    update: UserUpdate,
    done: &str,
) -> anyhow::Result<()> {
    let user = find(app, username).await?;
    app.update_user(None, user.id, update)
        .await
        .map_err(explain)?;
    println!("{username}: {done}");
    Ok(())
}

async fn find<P: Ports>(app: &App<P>, username: &str) -> anyhow::Result<UserRecord> {
    let name = Username::parse(username)?;
    let users = app.list_users(None).await.map_err(explain)?;
    users
        .into_iter()
        .find(|u| u.username == name)
        .with_context(|| {
            format!(
                "no user named {username} in this database; `rmm-server user list` shows who exists"
            )
        })
}

fn explain(e: UserAdminError) -> anyhow::Error {
    match e {
        UserAdminError::LastAdmin => anyhow::anyhow!(
            "refused: it would leave no enabled admin; make another user an admin first (`rmm-server user set-role --username NAME --role admin`)"
        ),
        UserAdminError::Store(_) | UserAdminError::Hashing(_) => {
            anyhow::Error::new(e).context("the database refused the change; nothing was changed")
        }
        other => anyhow::anyhow!("{other}"),
    }
}

fn read_password() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .context("cannot read the password from standard input")?;
    Ok(password.trim_end_matches(['\r', '\n']).to_owned())
}
