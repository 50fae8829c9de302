//! `warden device profile`: what an MDM (or an admin by hand) puts on an enrolled device
//! so its DNS goes to Warden, encrypted, with its ID:
//! - an Apple configuration profile (`.mobileconfig`: iOS, iPadOS, macOS): a DNS
//!   Settings payload (`com.apple.dnsSettings.managed`, DNS over HTTPS to the device's
//!   URL) and, when Warden's certificate is self-signed, that certificate as a root
//!   payload for the device to trust;
//! - a Windows PowerShell script (for an Intune platform script or by hand): registers
//!   the device's DoH template for Warden's addresses and points the adapters at them,
//!   with fallback to plain DNS off;
//! - the Chrome and Edge managed policy (`DnsOverHttpsMode = secure`,
//!   `DnsOverHttpsTemplates`), as JSON for the policy folder or the admin console.
//!
//! Profile UUIDs are derived from the host and the device ID, so a profile made again
//! replaces the one installed instead of adding a second.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::config::{shown_device_id, DeviceConfig, EncryptedConfig};

/// The formats `warden device profile --format` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Mobileconfig,
    Windows,
    Chrome,
}

/// Why a profile cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("[encrypted] doh_listen is empty: devices need DNS over HTTPS for this profile")]
    NoDoh,
    #[error("a Windows profile names Warden by address: set [encrypted] addresses (the addresses devices reach it at)")]
    NoAddresses,
    #[error("cannot write the property list: {0}")]
    Plist(String),
}

/// What a profile is made from.
pub struct Inputs<'a> {
    pub encrypted: &'a EncryptedConfig,
    pub device: &'a DeviceConfig,
    /// The server's certificate (DER), to be trusted by the device: only when it is
    /// self-signed (a public CA's is trusted already).
    pub self_signed_cert: Option<Vec<u8>>,
}

impl Inputs<'_> {
    fn url(&self) -> String {
        self.encrypted.doh_url(Some(self.device.id.get_ref()))
    }

    fn host(&self) -> &str {
        self.encrypted.hostname.get_ref()
    }
}

/// The profile for `inputs` in `format`.
pub fn write(format: Format, inputs: &Inputs<'_>) -> Result<Vec<u8>, ProfileError> {
    if inputs.encrypted.doh_listen.is_empty() {
        return Err(ProfileError::NoDoh);
    }
    match format {
        Format::Mobileconfig => mobileconfig(inputs),
        Format::Windows => windows(inputs).map(String::into_bytes),
        Format::Chrome => Ok(chrome(inputs).into_bytes()),
    }
}

/// A UUID (RFC 4122 layout, version 4 bits) that depends only on `parts`.
fn stable_uuid(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let mut b: [u8; 16] = hash.finalize()[..16].try_into().unwrap_or([0; 16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex::encode_upper(b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The Apple configuration profile (an XML property list).
fn mobileconfig(inputs: &Inputs<'_>) -> Result<Vec<u8>, ProfileError> {
    use plist::{Dictionary, Value};
    let (host, id) = (inputs.host(), inputs.device.id.get_ref().as_str());
    let identifier = format!("{}.warden.{id}", reverse_dns(host));
    let mut payloads = Vec::new();
    let mut dns = Dictionary::new();
    dns.insert("DNSProtocol".into(), "HTTPS".into());
    dns.insert("ServerURL".into(), inputs.url().into());
    let addresses: Vec<Value> = inputs
        .encrypted
        .addresses
        .iter()
        .map(|a| Value::String(a.to_string()))
        .collect();
    if !addresses.is_empty() {
        dns.insert("ServerAddresses".into(), Value::Array(addresses));
    }
    let mut settings = payload(
        "com.apple.dnsSettings.managed",
        &format!("{identifier}.dns"),
        &format!("Warden filtering ({})", inputs.device.name),
        &[host, id, "dns"],
    );
    settings.insert("DNSSettings".into(), Value::Dictionary(dns));
    payloads.push(Value::Dictionary(settings));
    if let Some(der) = &inputs.self_signed_cert {
        let mut root = payload(
            "com.apple.security.root",
            &format!("{identifier}.cert"),
            &format!("Warden certificate for {host}"),
            &[host, id, "cert"],
        );
        root.insert("PayloadContent".into(), Value::Data(der.clone()));
        root.insert(
            "PayloadCertificateFileName".into(),
            format!("{host}.cer").into(),
        );
        payloads.push(Value::Dictionary(root));
    }
    let mut top = payload(
        "Configuration",
        &identifier,
        &format!("Warden: {}", inputs.device.name),
        &[host, id],
    );
    top.insert(
        "PayloadDescription".into(),
        format!(
            "Sends this device's DNS to Warden at {host} over HTTPS, filtered as group {}.",
            inputs.device.group.get_ref()
        )
        .into(),
    );
    top.insert("PayloadOrganization".into(), host.into());
    top.insert("PayloadRemovalDisallowed".into(), true.into());
    top.insert("PayloadContent".into(), Value::Array(payloads));
    let mut out = Vec::new();
    plist::to_writer_xml(&mut out, &Value::Dictionary(top))
        .map_err(|e| ProfileError::Plist(e.to_string()))?;
    Ok(out)
}

/// The keys every payload has.
fn payload(kind: &str, identifier: &str, name: &str, uuid_parts: &[&str]) -> plist::Dictionary {
    let mut dict = plist::Dictionary::new();
    dict.insert("PayloadType".into(), kind.into());
    dict.insert("PayloadVersion".into(), 1.into());
    dict.insert("PayloadIdentifier".into(), identifier.into());
    dict.insert("PayloadUUID".into(), stable_uuid(uuid_parts).into());
    dict.insert("PayloadDisplayName".into(), name.into());
    dict
}

/// `warden.school.example` as a reverse-DNS identifier prefix: `example.school.warden`.
fn reverse_dns(host: &str) -> String {
    host.split('.').rev().collect::<Vec<_>>().join(".")
}

/// The Windows PowerShell script (Windows 11; run as administrator or as an Intune
/// platform script).
fn windows(inputs: &Inputs<'_>) -> Result<String, ProfileError> {
    let addresses = &inputs.encrypted.addresses;
    if addresses.is_empty() {
        return Err(ProfileError::NoAddresses);
    }
    let url = inputs.url();
    let list = |wanted: fn(&IpAddr) -> bool| {
        addresses
            .iter()
            .filter(|a| wanted(a))
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (v4, v6) = (list(IpAddr::is_ipv4), list(IpAddr::is_ipv6));
    let mut script = format!(
        "# Warden DNS over HTTPS for {name} (device {shown}), group {group}.\n\
         # Windows 11: run as administrator, or deploy as an Intune platform script.\n\
         # Each address is registered with this device's template, fallback to plain DNS\n\
         # off, and every connected adapter is pointed at them.\n\
         $ErrorActionPreference = 'Stop'\n\
         $template = '{url}'\n\
         $servers = @({all})\n\
         foreach ($server in $servers) {{\n\
         \x20   if (Get-DnsClientDohServerAddress -ServerAddress $server -ErrorAction SilentlyContinue) {{\n\
         \x20       Set-DnsClientDohServerAddress -ServerAddress $server -DohTemplate $template -AllowFallbackToUdp $false -AutoUpgrade $true\n\
         \x20   }} else {{\n\
         \x20       Add-DnsClientDohServerAddress -ServerAddress $server -DohTemplate $template -AllowFallbackToUdp $false -AutoUpgrade $true\n\
         \x20   }}\n\
         }}\n",
        name = powershell_text(&inputs.device.name),
        shown = shown_device_id(inputs.device.id.get_ref()),
        group = powershell_text(inputs.device.group.get_ref()),
        all = list(|_| true),
    );
    script.push_str("$adapters = Get-NetAdapter | Where-Object Status -eq 'Up'\n");
    if !v4.is_empty() {
        script.push_str(&format!(
            "$adapters | Set-DnsClientServerAddress -ServerAddresses @({v4})\n"
        ));
    }
    if !v6.is_empty() {
        script.push_str(&format!(
            "$adapters | Set-DnsClientServerAddress -ServerAddresses @({v6})\n"
        ));
    }
    Ok(script)
}

/// Text safe inside a PowerShell comment or single-quoted string: one line, no quote.
fn powershell_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() || c == '\'' { '_' } else { c })
        .collect()
}

/// The Chrome and Edge managed policy, as JSON (Linux: a file in
/// `/etc/opt/chrome/policies/managed/`; elsewhere the same two keys in the admin
/// console or registry).
fn chrome(inputs: &Inputs<'_>) -> String {
    let policy = serde_json::json!({
        "DnsOverHttpsMode": "secure",
        "DnsOverHttpsTemplates": inputs.url(),
    });
    let mut text = serde_json::to_string_pretty(&policy).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_shaped() {
        let a = stable_uuid(&["warden.test", "abc", "dns"]);
        assert_eq!(a, stable_uuid(&["warden.test", "abc", "dns"]));
        assert_ne!(a, stable_uuid(&["warden.test", "abc", "cert"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "A" | "B"), "{a}");
    }

    #[test]
    fn powershell_text_cannot_break_out() {
        assert_eq!(powershell_text("Bob's\npad"), "Bob_s_pad");
    }
}
