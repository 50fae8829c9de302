//! `warden user add|remove|list`: the dashboard's `[[users]]`, edited in the config file
//! itself ([`crate::config_edit`]: comments and layout survive, and a bad edit is never
//! written).

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use toml_edit::{ArrayOfTables, DocumentMut, Table};

use crate::config::{check_user_name, Role};
use crate::config_edit::{load, save, tables_mut, EditError};
use crate::dashboard::auth;
use crate::dashboard::second_factor::{self, Enrolment};

/// Shortest password accepted.
pub(crate) const MIN_PASSWORD: usize = 10;

/// Read a new password: twice, without echo, on a terminal; one line from standard input
/// otherwise (for scripts and tests).
pub(crate) fn read_password(name: &str) -> Result<String, EditError> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("New password for {name}: "))
            .map_err(|e| EditError::Invalid(format!("cannot read the password: {e}")))?;
        let second = rpassword::prompt_password("Again: ")
            .map_err(|e| EditError::Invalid(format!("cannot read the password: {e}")))?;
        if first != second {
            return Err(EditError::Invalid("the two passwords differ".into()));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| EditError::Invalid(format!("cannot read the password: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.chars().count() < MIN_PASSWORD {
        return Err(EditError::Invalid(format!(
            "the password must be at least {MIN_PASSWORD} characters"
        )));
    }
    Ok(password)
}

fn users_mut<'a>(
    doc: &'a mut DocumentMut,
    path: &Path,
) -> Result<&'a mut ArrayOfTables, EditError> {
    tables_mut(doc, path, "users")
}

/// Add user `name` with `role` and `password`, or reset an existing one's role and
/// password. Returns whether the user was new.
pub fn add(
    path: &Path,
    name: &str,
    role: Role,
    password: &str,
    sites: &[String],
) -> Result<bool, EditError> {
    check_user_name(name).map_err(|e| EditError::Invalid(e.to_string()))?;
    if let Some(problem) = sites
        .iter()
        .find_map(|s| crate::config::site_name_problem(s))
    {
        return Err(EditError::Invalid(format!("--site: {problem}")));
    }
    let (_, mut doc) = load(path)?;
    let hash = auth::hash_password(password)?;
    let users = users_mut(&mut doc, path)?;
    let existing = users
        .iter_mut()
        .find(|t| t.get("name").and_then(|v| v.as_str()) == Some(name));
    let new = existing.is_none();
    // The sites given replace the user's; none given keeps what they had.
    let set_sites = |table: &mut Table| {
        if !sites.is_empty() {
            table["sites"] = toml_edit::value(sites.iter().collect::<toml_edit::Array>());
        }
    };
    match existing {
        Some(table) => {
            table["role"] = toml_edit::value(role.as_str());
            table["password_hash"] = toml_edit::value(hash);
            set_sites(table);
        }
        None => {
            let mut table = Table::new();
            table["name"] = toml_edit::value(name);
            table["role"] = toml_edit::value(role.as_str());
            table["password_hash"] = toml_edit::value(hash);
            set_sites(&mut table);
            users.push(table);
        }
    }
    save(path, &doc.to_string())?;
    Ok(new)
}

/// `warden user 2fa NAME [--remove]`: set up (or remove) `name`'s second factor, and
/// print what they need to enrol.
pub fn two_factor(path: &Path, name: &str, remove: bool) -> Result<(), EditError> {
    if remove {
        set_second_factor(path, name, None)?;
        println!(
            "removed {name}'s second factor in {}; a running Warden picks it up at its next reload",
            path.display()
        );
        return Ok(());
    }
    let (text, _) = load(path)?;
    let organisation = crate::config::Config::parse(&text, path)?
        .dashboard
        .organisation;
    let enrolment = Enrolment::new(name, &organisation)?;
    if std::io::stdin().is_terminal() {
        show_enrolment(name, &enrolment);
        confirm_code(&enrolment)?;
    }
    set_second_factor(
        path,
        name,
        Some((&enrolment.secret_base32, &enrolment.recovery_hashes())),
    )?;
    if !std::io::stdin().is_terminal() {
        show_enrolment(name, &enrolment);
    }
    println!(
        "two-factor sign-in set up for {name} in {}; a running Warden picks it up at its \
         next reload (their open sessions end)",
        path.display()
    );
    Ok(())
}

/// The URI, its QR code and the recovery codes.
fn show_enrolment(name: &str, enrolment: &Enrolment) {
    println!("Scan this with {name}'s authenticator app, or enter the URI or secret by hand:\n");
    if let Some(qr) = second_factor::terminal_qr(&enrolment.uri) {
        println!("{qr}");
    }
    println!("URI:    {}", enrolment.uri);
    println!("Secret: {}\n", enrolment.secret_base32);
    println!("Recovery codes (each signs in once, in place of a code; keep them safe, they are not shown again):");
    for code in &enrolment.recovery_codes {
        println!("  {code}");
    }
    println!();
}

/// On a terminal: the code the app now shows must match before the secret is saved, so
/// a mistyped enrolment cannot lock the user out.
fn confirm_code(enrolment: &Enrolment) -> Result<(), EditError> {
    let secret = second_factor::decode_secret(&enrolment.secret_base32)
        .map_err(|e| EditError::Invalid(format!("the new secret {e}")))?;
    for _ in 0..3 {
        print!("Code the app shows now (to confirm): ");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| EditError::Invalid(format!("cannot read the code: {e}")))?;
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if second_factor::check(&secret, &[], &line, unix).is_some() {
            return Ok(());
        }
        println!("That code does not match (is the phone's clock right?).");
    }
    Err(EditError::Invalid(
        "no matching code: nothing was changed".to_string(),
    ))
}

/// Write (or with `None`, remove) `name`'s TOTP secret and recovery-code hashes.
fn set_second_factor(
    path: &Path,
    name: &str,
    factor: Option<(&str, &[String])>,
) -> Result<(), EditError> {
    let (_, mut doc) = load(path)?;
    let users = users_mut(&mut doc, path)?;
    let Some(table) = users
        .iter_mut()
        .find(|t| t.get("name").and_then(|v| v.as_str()) == Some(name))
    else {
        return Err(EditError::Invalid(format!(
            "there is no user {name:?} in {}: add them first with `warden user add {name}`",
            path.display()
        )));
    };
    match factor {
        Some((secret, hashes)) => {
            table["totp_secret"] = toml_edit::value(secret);
            table["recovery_codes"] = toml_edit::value(hashes.iter().collect::<toml_edit::Array>());
        }
        None => {
            table.remove("totp_secret");
            table.remove("recovery_codes");
        }
    }
    save(path, &doc.to_string())
}

/// Remove user `name`.
pub fn remove(path: &Path, name: &str) -> Result<(), EditError> {
    let (_, mut doc) = load(path)?;
    let users = users_mut(&mut doc, path)?;
    let before = users.len();
    users.retain(|t| t.get("name").and_then(|v| v.as_str()) != Some(name));
    if users.len() == before {
        return Err(EditError::Invalid(format!(
            "there is no user {name:?} in {}",
            path.display()
        )));
    }
    if users.is_empty() {
        doc.remove("users");
    }
    save(path, &doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const CONFIG: &str = "# The admin's comment stays.\n[server]\nlisten = [\"127.0.0.1:5353\"]\n";

    #[test]
    fn users_are_added_reset_and_removed_keeping_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.toml");
        std::fs::write(&path, CONFIG).unwrap();
        assert!(add(&path, "lead", Role::Lead, "a long password", &[]).unwrap());
        assert!(add(&path, "admin", Role::Admin, "another password", &[]).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# The admin's comment stays."), "{text}");
        assert!(!text.contains("a long password"));
        let config = Config::load(&path).unwrap();
        assert_eq!(config.users.len(), 2);
        let lead = &config.users[0];
        assert!(auth::verify_password(
            "a long password",
            lead.password_hash.get_ref()
        ));
        // Reset: same user, new role and password.
        assert!(!add(&path, "lead", Role::Admin, "a new password!", &[]).unwrap());
        let config = Config::load(&path).unwrap();
        assert_eq!(config.users.len(), 2);
        assert_eq!(config.users[0].role, Role::Admin);
        assert!(auth::verify_password(
            "a new password!",
            config.users[0].password_hash.get_ref()
        ));
        remove(&path, "lead").unwrap();
        assert_eq!(Config::load(&path).unwrap().users.len(), 1);
        let err = remove(&path, "lead").unwrap_err().to_string();
        assert!(err.contains("no user \"lead\""), "{err}");
        let err = add(&path, "bad name", Role::Lead, "a long password", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be 1 to 64"), "{err}");
    }

    /// `--site` binds a user to sites of the fleet dashboard; a reset without it keeps
    /// them, one with it replaces them; a name no site could have is refused.
    #[test]
    fn a_user_is_bound_to_the_sites_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.toml");
        std::fs::write(&path, CONFIG).unwrap();
        let sites = |path: &Path| -> Option<Vec<String>> {
            let config = Config::load(path).unwrap();
            config.users[0]
                .sites
                .as_ref()
                .map(|s| s.iter().map(|s| s.get_ref().clone()).collect())
        };
        let two = ["elm".to_string(), "oak".to_string()];
        add(&path, "lead", Role::Lead, "a long password", &two).unwrap();
        assert_eq!(sites(&path), Some(two.to_vec()));
        add(&path, "lead", Role::Lead, "a new password!", &[]).unwrap();
        assert_eq!(sites(&path), Some(two.to_vec()), "kept on a reset");
        add(&path, "lead", Role::Lead, "a new password!", &two[1..]).unwrap();
        assert_eq!(sites(&path), Some(vec!["oak".to_string()]), "replaced");
        let before = std::fs::read_to_string(&path).unwrap();
        let err = add(&path, "lead", Role::Lead, "x", &["a b".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--site") && err.contains("' '"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    }

    #[test]
    fn a_config_that_would_not_load_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.toml");
        let broken = "[server]\nlisten = [\"127.0.0.1:5353\"]\nnot_a_field = 1\n";
        std::fs::write(&path, broken).unwrap();
        let err = add(&path, "lead", Role::Lead, "a long password", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not_a_field"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
    }
}
