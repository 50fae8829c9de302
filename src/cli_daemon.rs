//! Asking the running Warden over its admin API (`[admin] listen`, with the token in
//! `[admin] token_file`): what `warden reload` and `warden selftest` do.

use anyhow::{Context, Result};

/// A runtime for one request from the command line.
pub(crate) fn current_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// POST `route` to the admin listener with the admin token; the daemon's JSON reply.
pub(crate) async fn post(config: &crate::config::Config, route: &str) -> Result<serde_json::Value> {
    let admin = &config.admin;
    anyhow::ensure!(
        admin.enabled,
        "[admin] enabled = false: no admin API to ask"
    );
    let token = crate::admin::read_token(&config.resolve(&admin.token_file))?;
    let mut addr = admin.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}{route}");
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .timeout(std::time::Duration::from_secs(120))
        .send()
        .await
        .with_context(|| format!("no running Warden answered at {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("{url} answered HTTP {status} without a JSON body"))?;
    anyhow::ensure!(
        status != reqwest::StatusCode::UNAUTHORIZED,
        "{url} refused the token in {}",
        config.resolve(&admin.token_file).display()
    );
    Ok(body)
}
