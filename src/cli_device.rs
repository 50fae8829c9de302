//! `warden device add|list|remove|profile`: enrolled devices (`[[devices]]`) from the
//! command line, and the profiles an MDM pushes to them ([`crate::profiles`]).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::cli_args::ConfigArg;
use crate::config::Config;
use crate::profiles::{self, Format, Inputs};

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Enrol a device: it gets a random ID (printed), which its profile carries in its
    /// DNS over HTTPS URL and DNS over TLS name.
    Add {
        /// What the audit log and dashboard call it ("iPad 7", "Staff laptop 3").
        name: String,
        /// The group it filters as, wherever it is.
        #[arg(long)]
        group: String,
        /// The person it belongs to, if it is one person's.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the enrolled devices: ID, name, group, user.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove a device (by ID or name): its ID is answered no more.
    Remove {
        /// The device's ID or name.
        device: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write the profile that sends a device's DNS to Warden.
    Profile {
        /// The device's ID or name.
        device: String,
        #[arg(long, value_enum)]
        format: FormatArg,
        /// Write it here instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// An Apple configuration profile (iOS, iPadOS, macOS).
    Mobileconfig,
    /// A PowerShell script for Windows 11 (Intune platform script).
    Windows,
    /// The Chrome and Edge managed policy (JSON).
    Chrome,
}

pub fn run(command: DeviceCommand) -> Result<ExitCode> {
    match command {
        DeviceCommand::Add {
            name,
            group,
            user,
            config,
        } => {
            let id = crate::devices::add(&config.config, &name, &group, user.as_deref())?;
            let loaded = Config::load(&config.config)?;
            println!(
                "enrolled {name:?} (group {group}) with ID {id}\n\
                 DNS over HTTPS: {}\n\
                 DNS over TLS name: {id}.{}\n\
                 a running Warden answers it from its next reload; its profile: \
                 `warden device profile {id} --format mobileconfig|windows|chrome`",
                loaded.encrypted.doh_url(Some(&id)),
                loaded.encrypted.hostname.get_ref(),
            );
        }
        DeviceCommand::List { config } => {
            let loaded = Config::load(&config.config)?;
            if loaded.devices.is_empty() {
                println!("no devices yet: enrol one with `warden device add NAME --group GROUP`");
            }
            for device in &loaded.devices {
                println!(
                    "{}\t{}\t{}\t{}",
                    device.id.get_ref(),
                    device.name,
                    device.group.get_ref(),
                    device.user.as_deref().unwrap_or("-")
                );
            }
        }
        DeviceCommand::Remove { device, config } => {
            let name = crate::devices::remove(&config.config, &device)?;
            println!(
                "removed {name:?} from {}; a running Warden stops answering its ID at its next reload",
                config.config.display()
            );
        }
        DeviceCommand::Profile {
            device,
            format,
            out,
            config,
        } => profile(&config.config, &device, format, out)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `warden device profile`.
fn profile(
    path: &std::path::Path,
    which: &str,
    format: FormatArg,
    out: Option<PathBuf>,
) -> Result<()> {
    let config = Config::load(path)?;
    let device = crate::devices::find(&config, which)?;
    let files = crate::tls::CertFiles::of(&config);
    let self_signed_cert = if files.self_signed {
        Some(self_signed_der(&files.cert)?)
    } else {
        None
    };
    let format = match format {
        FormatArg::Mobileconfig => Format::Mobileconfig,
        FormatArg::Windows => Format::Windows,
        FormatArg::Chrome => Format::Chrome,
    };
    let inputs = Inputs {
        encrypted: &config.encrypted,
        device,
        self_signed_cert,
    };
    let bytes = profiles::write(format, &inputs)?;
    match out {
        Some(out) => {
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {} for {:?}", out.display(), device.name);
        }
        None => std::io::stdout().lock().write_all(&bytes)?,
    }
    Ok(())
}

/// The self-signed certificate Warden serves (made at its first start), as DER.
fn self_signed_der(cert: &std::path::Path) -> Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(cert).with_context(|| {
        format!(
            "no self-signed certificate at {} yet: start Warden with [encrypted] once (it makes one), or set cert_file and key_file",
            cert.display()
        )
    })?;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .context("the self-signed certificate file holds no certificate")?
        .with_context(|| format!("{} is not a PEM certificate", cert.display()))?;
    Ok(der.to_vec())
}
