//! `rmm users`: the users of the server, for admins.

use rmm_client::{ApiClient, UserDto};

use crate::CliError;
use crate::render::{Table, print_json};

/// Lists the users: a table (username, role, state, groups) or JSON.
///
/// # Errors
/// Client errors (a non-admin is refused by the server: forbidden).
pub async fn users(client: &ApiClient, json: bool) -> Result<(), CliError> {
    let users = client.users().await?;
    if json {
        return print_json(&users);
    }
    table(&users).print()
}

fn table(users: &[UserDto]) -> Table {
    let mut table = Table::new(&["USERNAME", "ROLE", "STATE", "GROUPS"]);
    for user in users {
        table.row(vec![
            user.username.clone(),
            user.role.clone(),
            if user.disabled { "disabled" } else { "enabled" }.to_owned(),
            if user.groups.is_empty() {
                "-".to_owned()
            } else {
                user.groups.join(",")
            },
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use super::*;

    fn user(name: &str, role: &str, disabled: bool, groups: &[&str]) -> UserDto {
        UserDto {
            user_id: uuid::Uuid::nil(),
            username: name.to_owned(),
            role: role.to_owned(),
            disabled,
            created_at: chrono::DateTime::UNIX_EPOCH,
            last_login_at: None,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    #[test]
    fn the_table_shows_role_state_and_groups() {
        let users = [
            user("admin", "admin", false, &["default"]),
            user("tina", "technician", true, &["acme", "globex"]),
            user("ghost", "auditor", false, &[]),
        ];
        assert_eq!(
            table(&users).render(),
            "USERNAME  ROLE        STATE     GROUPS\n\
             admin     admin       enabled   default\n\
             tina      technician  disabled  acme,globex\n\
             ghost     auditor     enabled   -\n"
        );
    }
}
