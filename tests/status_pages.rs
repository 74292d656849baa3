//! The status pages as an operator sees them, in a real headless browser
//! (Debian's `chromium`): a cascade's picture shows each member's state in
//! its colour; the finder and a project's page lead from one project to its
//! upstreams, downstreams and cascades.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::server::*;
use common::*;
use gitlab_sim::{PipelineStatus, Simulator};
use serde_json::Value;

/// The colours of `src/server/picture.rs`'s `Shown::colour`.
const FAILED: [u8; 3] = [0xe0, 0x52, 0x52];
const PRUNED: [u8; 3] = [0xf0, 0xb4, 0x4c];
const SUCCEEDED: [u8; 3] = [0x5c, 0xb8, 0x5c];

/// Chromium as a batch tool: no sandbox (root in CI), no network but the
/// page's, a throwaway profile.
fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs")
}

/// Pixels of the screenshot of exactly this colour.
fn count_colour(png_path: &Path, colour: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(std::fs::File::open(png_path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|px| px[..3] == colour)
        .count()
}

async fn run_cascade() -> (Simulator, tempfile::TempDir, Server) {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/fine", &["g/base"]),
        image_project("g/broken", &["g/base"])
            .pipeline(Duration::from_millis(100), PipelineStatus::Failed),
        image_project("g/under-broken", &["g/broken"]),
        image_project("g/under-fine", &["g/fine"]),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &[]).await;
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    sim.run_pipeline("g/base").unwrap();
    server.cascades_done().await;
    (sim, state, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cascade_is_drawn_in_its_states_colours_in_a_real_browser() {
    if !have_tool("chromium") {
        return;
    }
    let (_sim, _state, server) = run_cascade().await;
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("cascade.png");
    let url = format!("{}/cascades/1", server.url);
    let out = chromium(
        &dir.path().join("profile"),
        &[
            "--window-size=1400,900",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A member's box is 200×24 pixels; the legend's swatches and the
    // table's marks are far smaller. So thousands of pixels of a colour
    // mean a box of that state was drawn.
    let failed = count_colour(&shot, FAILED);
    let pruned = count_colour(&shot, PRUNED);
    let succeeded = count_colour(&shot, SUCCEEDED);
    assert!(failed > 2500, "one failed box (g/broken): {failed} pixels");
    assert!(
        pruned > 2500,
        "one box not built (g/under-broken): {pruned} pixels"
    );
    assert!(
        succeeded > 2 * 2500,
        "two built boxes (g/fine, g/under-fine): {succeeded} pixels"
    );
    assert!(failed < 2 * 4800 && pruned < 2 * 4800, "one box each");
    // The DOM the browser built: each box links to its project's page and
    // says why on hover, in words.
    let dom = chromium(&dir.path().join("profile"), &["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("not built: upstream g/broken did not succeed"),
        "{dom}"
    );
    assert_eq!(dom.matches("<a href=\"/projects/").count(), 4 + 4, "{dom}");
    assert!(dom.contains(" ago</time>") || dom.contains("just now</time>"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_is_found_by_name_and_shows_its_neighbours_and_cascades() {
    let (_sim, _state, server) = run_cascade().await;
    let base = server.url.clone();
    let get = |path: String| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let found = get("/projects?q=UNDER".into()).await;
    assert!(found.contains(">g/under-broken</a>") && found.contains(">g/under-fine</a>"));
    assert!(!found.contains(">g/base</a>"));
    let id = |html: &str, path: &str| -> u64 {
        let end = html.find(&format!("\">{path}</a>")).unwrap();
        let start = html[..end].rfind("/projects/").unwrap() + "/projects/".len();
        html[start..end].parse().unwrap()
    };
    let broken = id(&get("/projects?q=broken".into()).await, "g/broken");
    let page: Value =
        serde_json::from_str(&get(format!("/projects/{broken}?format=json")).await).unwrap();
    assert_eq!(page["upstreams"][0]["project"], "g/base");
    assert_eq!(page["downstreams"][0]["project"], "g/under-broken");
    assert_eq!(page["cascades"], serde_json::json!([1]));
    let html = get(format!("/projects/{broken}")).await;
    assert!(html.contains("<a href=\"/cascades/1\">#1</a>"), "{html}");
    assert!(html.contains("failed: pipeline failed"), "{html}");
    let missing = reqwest::get(format!("{}/projects/999999", server.url))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
