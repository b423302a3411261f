//! The consumer portal in a real browser: tests/portal/stories.mjs drives
//! headless Chromium (Debian's) with Playwright through the stories of
//! issue 16, against an app this test starts on the real broker and
//! database; axe-core checks every page it visits, and it saves the
//! screenshots in `docs/portal/`.
//!
//! A test binary of its own: a browser is heavy on two cores, and cargo
//! runs test binaries one after another.

#![allow(clippy::expect_used, clippy::unwrap_used, unreachable_pub)]

#[allow(dead_code, unused_imports)]
#[path = "it/harness/mod.rs"]
mod harness;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use chrono::Utc;
use hookgate::domain::portal::{PortalLink, PortalSecret};
use hookgate::domain::TenantId;
use serde_json::json;

use crate::harness::{TestApp, ADMIN_TOKEN};

/// The whole run of the stories, browser start included; each story has
/// 90 s of its own, so a stuck one fails with its name.
const STORIES_DEADLINE: Duration = Duration::from_secs(420);

/// How many of Playwright's last logged calls a failure shows.
const CALLS_SHOWN: usize = 60;

/// The runner's own lines, then the last of Playwright's calls (`pw:api`
/// lines, which the runner passes on among them): where a story stuck.
fn report(output: &str) -> String {
    let (calls, own): (Vec<&str>, Vec<&str>) = output.lines().partition(|l| l.contains(" pw:api "));
    let last = &calls[calls.len().saturating_sub(CALLS_SHOWN)..];
    format!("{}\n\nPlaywright's last calls:\n{}", own.join("\n"), last.join("\n"))
}

fn chromium() -> String {
    std::env::var("HOOKGATE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut text = String::new();
    if let Some(mut pipe) = pipe {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes).await;
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_manage_their_webhooks_in_a_real_browser() {
    let app = TestApp::spawn("portal").await;
    // An expired link, made in the store: the API makes none that short.
    let (status, tenant) = app
        .call(reqwest::Method::POST, "/v1/tenants", ADMIN_TOKEN, Some(json!({"name": "Initech"})))
        .await;
    assert_eq!(status, 201, "{tenant}");
    let expired = PortalSecret::link_token();
    let now = Utc::now();
    let link = PortalLink {
        tenant_id: TenantId::parse(tenant["id"].as_str().unwrap()).unwrap(),
        read_only: false,
        created_at: now - chrono::Duration::hours(2),
        expires_at: now - chrono::Duration::hours(1),
    };
    app.store.create_portal_link(&expired.hash, &link).await.expect("expired link stored");

    let root = env!("CARGO_MANIFEST_DIR");
    let mut stories = tokio::process::Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "--test-timeout=360000",
            // Ends when the stories have, whatever a stuck browser holds open.
            "--test-force-exit",
            "stories.mjs",
        ])
        .current_dir(format!("{root}/tests/portal"))
        .env("PORTAL_BASE", &app.base_url)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("EXPIRED_LINK", format!("{}/portal/login?token={}", app.base_url, expired.text))
        .env("CHROMIUM", chromium())
        .env("SCREENSHOTS", format!("{root}/docs/portal"))
        // Playwright logs each call it makes: the tail shows where a story stuck.
        .env("DEBUG", "pw:api")
        // Its own process group, so that a stuck run is killed with the
        // runner's child that runs the file.
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (scripts/test-env installs tests/portal's packages)");
    // Read as it comes, so that a run cut off still shows how far it got.
    let stdout = tokio::spawn(read_all(stories.stdout.take()));
    let stderr = tokio::spawn(read_all(stories.stderr.take()));
    let status = match tokio::time::timeout(STORIES_DEADLINE, stories.wait()).await {
        Ok(status) => Some(status.expect("node ran")),
        Err(_) => {
            if let Some(pid) = stories.id() {
                let _ = tokio::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status()
                    .await;
            }
            let _ = stories.kill().await;
            None
        }
    };
    let output =
        format!("{}\n{}", stdout.await.unwrap_or_default(), stderr.await.unwrap_or_default());
    let report = report(&output);
    let status = status.unwrap_or_else(|| {
        panic!("the stories did not end within {STORIES_DEADLINE:?}:\n{report}")
    });
    assert!(status.success(), "the portal's stories failed:\n{report}");
    assert!(
        report.contains("pass 7") && report.contains("fail 0"),
        "all seven stories ran:\n{report}"
    );
    app.stop().await;
}
