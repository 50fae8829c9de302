//! The report as a PDF, printed by headless Chromium (`--print-to-pdf`) where it is
//! installed: the same page the browser shows, so the two never differ. Chromium runs
//! with a throwaway profile, no network beyond the local file, and a time limit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why no PDF was made.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error(
        "no Chromium found (looked for $WARDEN_CHROMIUM, chromium, chromium-browser, \
         google-chrome): install it (Debian: apt install chromium) or print the HTML from a browser"
    )]
    NoBrowser,
    #[error("{browser}: {reason}")]
    Failed { browser: String, reason: String },
}

/// How long Chromium may take to print.
const LIMIT: Duration = Duration::from_secs(90);

/// The browser to print with: `$WARDEN_CHROMIUM`, else the first on `PATH`.
pub fn browser() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WARDEN_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Print the HTML file `html` to `pdf`.
pub fn print(html: &Path, pdf: &Path) -> Result<(), PdfError> {
    let browser = browser().ok_or(PdfError::NoBrowser)?;
    let failed = |reason: String| PdfError::Failed {
        browser: browser.display().to_string(),
        reason,
    };
    let html =
        std::fs::canonicalize(html).map_err(|e| failed(format!("{}: {e}", html.display())))?;
    let profile = tempfile::tempdir().map_err(|e| failed(format!("a profile folder: {e}")))?;
    let mut child = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-pdf-header-footer",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(format!("cannot start it: {e}")))?;
    let deadline = Instant::now() + LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(status)) => return Err(failed(format!("exited with {status}"))),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("took longer than {}s", LIMIT.as_secs())));
            }
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    match std::fs::metadata(pdf) {
        Ok(m) if m.len() > 0 => Ok(()),
        _ => Err(failed(format!("wrote no PDF at {}", pdf.display()))),
    }
}
