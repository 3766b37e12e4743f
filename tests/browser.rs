//! Browser tests of the web pages (SPEC §10): Debian's chromium, driven through chromedriver
//! (WebDriver) by fantoccini, against a real `beast run` on the real engine.
//!
//! Ignored by default (they need `chromium` and `chromium-driver`); CI runs them with
//! `cargo test --test browser -- --ignored --test-threads=1`. The browser sends nothing off the
//! machine: background services are off, DNS resolves nothing but loopback, and every
//! non-loopback request goes to a proxy on a loopback port where nothing listens.
//! `BEAST_WEB_SCREENSHOTS=1` writes the screenshots under `docs/img/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// chromedriver, its chromium and the WebDriver session; killed when dropped.
struct Browser {
    client: Client,
    driver: Child,
    profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The flags that keep chromium on the machine: no background service, no DNS beyond
/// loopback, and every non-loopback request to `refusing` (a loopback port nothing listens on).
fn chromium_args(profile: &std::path::Path, refusing: u16) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-breakpad",
        "--disable-extensions",
        "--disable-features=OptimizationHints,Translate,MediaRouter,AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
        "--dns-prefetch-disable",
        "--metrics-recording-only",
        "--no-pings",
        "--safebrowsing-disable-auto-update",
        "--password-store=basic",
        "--use-mock-keychain",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        "--proxy-bypass-list=127.0.0.1;localhost;[::1]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--proxy-server=http://127.0.0.1:{refusing}"));
    args.push(format!("--user-data-dir={}", profile.display()));
    args
}

/// Debian's chromium itself, not its `/usr/bin/chromium` wrapper: the wrapper sources
/// `/etc/chromium.d`, which exports Google API keys and turns on remote extensions.
fn chromium_binary() -> &'static str {
    const REAL: &str = "/usr/lib/chromium/chromium";
    if std::path::Path::new(REAL).exists() {
        REAL
    } else {
        "/usr/bin/chromium"
    }
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let refusing = free_port(); // bound and released: nothing listens there
        let profile = tempfile::tempdir().unwrap();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium chromium-driver)");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_string(),
            json!({"binary": chromium_binary(), "args": chromium_args(profile.path(), refusing)}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Browser {
            client,
            driver,
            profile,
        }
    }

    /// Evaluates `expr` (a JS expression) in the page.
    async fn js(&self, expr: &str) -> Value {
        self.client
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap_or(Value::Null)
    }

    /// Polls `expr` until it is truthy; returns its value.
    async fn wait_js(&self, what: &str, expr: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(expr).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let body = self.js("document.body.innerText").await;
                panic!("timed out waiting for {what} ({expr})\n--- page text ---\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching `css`, again if a re-render replaced it meanwhile.
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let outcome = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.click().await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("click {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn login(&self, token: &str) {
        self.wait_js(
            "the token prompt",
            "!document.getElementById('login').hidden",
            WAIT,
        )
        .await;
        let input = self.client.find(Locator::Id("token")).await.unwrap();
        input.send_keys(token).await.unwrap();
        self.click("#login-form button[type=submit]").await;
        self.wait_js(
            "the page after login",
            "!document.getElementById('main').hidden",
            WAIT,
        )
        .await;
    }

    /// At a phone's width the page does not scroll sideways (wide tables scroll in their box).
    async fn fits_a_phone(&self, screenshot: &str) {
        self.client.set_window_size(390, 844).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fits = self
            .js("document.documentElement.scrollWidth <= window.innerWidth + 1")
            .await;
        let widths = self
            .js("[document.documentElement.scrollWidth, window.innerWidth]")
            .await;
        self.screenshot(screenshot).await;
        self.client.set_window_size(1280, 900).await.unwrap();
        assert_eq!(
            fits,
            json!(true),
            "the page scrolls sideways on a phone: {widths}"
        );
    }

    /// A screenshot of the whole page from its top (the window grown to fit, then restored).
    async fn screenshot_page(&self, name: &str) {
        let height = self
            .js("document.documentElement.scrollHeight")
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(600, 1600) as u32;
        self.client
            .set_window_size(1280, height + 90)
            .await
            .unwrap();
        self.js("window.scrollTo(0, 0) || true").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.screenshot(name).await;
        self.client.set_window_size(1280, 900).await.unwrap();
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = if std::env::var_os("BEAST_WEB_SCREENSHOTS").is_some() {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/img")
        } else {
            std::env::temp_dir()
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }

    /// The time to first paint of the current page, in ms (a figure for docs/benchmarks.md).
    async fn first_paint(&self) -> f64 {
        self.js("(performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint') || {}).startTime || 0")
            .await
            .as_f64()
            .unwrap_or(0.0)
    }

    /// Ends the session cleanly; the rest goes when `self` drops.
    /// Loads `url` five times (token already in session storage) and prints the first
    /// contentful paint of each and their median, in ms.
    async fn first_paint_of(&self, url: &str) -> f64 {
        let mut paints = Vec::new();
        for _ in 0..5 {
            self.client.goto(url).await.unwrap();
            self.wait_js("the page", "!document.getElementById('main').hidden", WAIT)
                .await;
            paints.push(self.first_paint().await);
        }
        let mut sorted = paints.clone();
        sorted.sort_by(f64::total_cmp);
        eprintln!(
            "first contentful paint of {url}: {paints:.0?} ms, median {:.0} ms",
            sorted[2]
        );
        sorted[2]
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        kill_chromium(self.profile.path());
    }
}

/// Kills the chromium processes of this profile only (their command line names it).
fn kill_chromium(profile: &std::path::Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

const FLAG: &str = "flag{web_pages_never_show_this_0123}";
const XSS: &str =
    "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\"> & friends";

fn main_id(env: &Env, name: &str) -> Option<String> {
    env.container_id(&env.name(name, 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver; CI runs it with --ignored"]
async fn dashboard_shows_phases_heals_live_and_redeploys() {
    let mut env = Env::new("web-dash");
    env.write(
        "echo/challenge.yaml",
        &manifest(
            "echo",
            &format!(
                "  command: [sh, -c, \"echo echo: listening on 1337; echo the flag is $FLAG; exec nc -ll -p 1337 -e cat\"]\n  ports: [{{port: 1337}}]\n  flag: \"{FLAG}\"\n  env: {{FLAG: \"{FLAG}\"}}\n"
            ),
        ),
    );
    env.write(
        "quiet/challenge.yaml",
        &format!(
            "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: quiet\n  labels: {{tier: two}}\nspec:\n  image: {BUSYBOX}\n  command: [sleep, \"3600\"]\n"
        ),
    );
    env.start();
    env.wait_running("echo");
    env.wait_running("quiet");
    let browser = Browser::start().await;
    browser.client.goto(&format!("{}/", env.api)).await.unwrap();

    // Auth on: the prompt, and nothing else, until a token is pasted.
    assert_eq!(
        browser.js("document.getElementById('main').hidden").await,
        json!(true)
    );
    browser.login(&env.token).await;
    browser
        .wait_js(
            "echo Running in the table",
            "document.querySelector('tr[data-name=echo][data-phase=Running]')",
            WAIT,
        )
        .await;
    assert_eq!(
        browser
            .js("document.getElementById('count-running').textContent")
            .await,
        json!("2")
    );
    browser
        .wait_js(
            "the event stream",
            "document.getElementById('live').classList.contains('on')",
            WAIT,
        )
        .await;

    // A container removed behind beast's back shows up as a heal, live, without a reload.
    browser.js("window.notReloaded = true").await;
    browser
        .js("document.getElementById('feed').replaceChildren() || true")
        .await;
    let before = main_id(&env, "echo").expect("echo's container");
    let removed = Instant::now();
    assert!(docker_ok(&["rm", "-f", &before]));
    browser
        .wait_js(
            "the heal in the feed",
            "document.querySelector('#feed li[data-kind=heal][data-challenge=echo]')",
            Duration::from_secs(15),
        )
        .await;
    eprintln!(
        "heal on the page {:.1} s after docker rm -f",
        removed.elapsed().as_secs_f64()
    );
    assert_eq!(browser.js("window.notReloaded === true").await, json!(true));
    browser
        .wait_js(
            "echo Running again",
            "document.querySelector('tr[data-name=echo][data-phase=Running]')",
            WAIT,
        )
        .await;

    // The detail view, and a redeploy from the page that replaces the container.
    browser.click("tr[data-name=echo] button").await;
    browser
        .wait_js(
            "the detail view",
            "!document.getElementById('detail').hidden",
            WAIT,
        )
        .await;
    browser
        .wait_js(
            "the manifest, flag hidden",
            "document.getElementById('d-manifest').textContent.includes('hidden')",
            WAIT,
        )
        .await;
    let healed = {
        let mut id = None;
        env.wait_for("echo's new container", WAIT, |env| {
            id = main_id(env, "echo");
            id.as_ref().is_some_and(|i| i != &before)
        });
        id.unwrap()
    };
    browser
        .wait_js(
            "the container in the detail view",
            &format!("document.querySelector('#d-containers tr[data-id^=\"{healed}\"]')"),
            WAIT,
        )
        .await;
    browser.click("#detail [data-action=redeploy]").await;
    browser
        .wait_js(
            "the redeploy task to succeed",
            "document.getElementById('d-task').dataset.state === 'succeeded'",
            WAIT,
        )
        .await;
    let mut after = None;
    env.wait_for("a new container after redeploy", WAIT, |env| {
        after = main_id(env, "echo");
        after.as_ref().is_some_and(|i| i != &healed) && env.running("echo", 1)
    });
    let after = after.unwrap();
    browser
        .wait_js(
            "the redeployed container on the page",
            &format!("document.querySelector('#d-containers tr[data-id^=\"{after}\"]')"),
            WAIT,
        )
        .await;

    // Filters: phase and label.
    browser
        .client
        .find(Locator::Id("filter-phase"))
        .await
        .unwrap()
        .select_by_value("Failed")
        .await
        .unwrap();
    browser
        .wait_js(
            "no Failed challenge",
            "document.querySelectorAll('#rows tr').length === 0 || null",
            WAIT,
        )
        .await;
    browser
        .client
        .find(Locator::Id("filter-phase"))
        .await
        .unwrap()
        .select_by_value("")
        .await
        .unwrap();
    let labels = browser
        .client
        .find(Locator::Id("filter-labels"))
        .await
        .unwrap();
    labels.send_keys("tier=two").await.unwrap();
    browser.click("#filters button[type=submit]").await;
    browser
        .wait_js(
            "only quiet under tier=two",
            "document.querySelectorAll('#rows tr').length === 1 && document.querySelector('#rows tr[data-name=quiet]')",
            WAIT,
        )
        .await;
    labels.clear().await.unwrap();
    browser.click("#filters button[type=submit]").await;
    browser
        .wait_js(
            "both again",
            "document.querySelectorAll('#rows tr').length === 2 || null",
            WAIT,
        )
        .await;

    browser
        .wait_js(
            "the live log, with the flag the container prints masked",
            "document.getElementById('d-log').textContent.includes('listening on 1337\\nthe flag is •••• (hidden)')",
            WAIT,
        )
        .await;
    browser
        .js("document.getElementById('d-manifest-box').open = true")
        .await;
    browser.screenshot_page("dashboard.png").await;
    browser.fits_a_phone("dashboard-phone.png").await;
    let source = browser.client.source().await.unwrap();
    assert!(!source.contains(FLAG), "the flag is on the page");
    assert!(!source.contains("flag{"), "a flag is on the page");

    browser.first_paint_of(&format!("{}/", env.api)).await;

    // A dropped stream (beast restarts): the page reconnects by itself and stays live.
    browser
        .wait_js(
            "the event stream",
            "document.getElementById('live').classList.contains('on')",
            WAIT,
        )
        .await;
    browser.js("window.notReloaded = true").await;
    assert!(env.stop().success());
    browser
        .wait_js(
            "the page to notice the drop",
            "!document.getElementById('live').classList.contains('on')",
            WAIT,
        )
        .await;
    env.start();
    browser
        .wait_js(
            "the stream back",
            "document.getElementById('live').classList.contains('on')",
            WAIT,
        )
        .await;
    browser
        .js("document.getElementById('feed').replaceChildren() || true")
        .await;
    let quiet = main_id(&env, "quiet").expect("quiet's container");
    assert!(docker_ok(&["rm", "-f", &quiet]));
    browser
        .wait_js(
            "a heal after the reconnect",
            "document.querySelector('#feed li[data-kind=heal][data-challenge=quiet]')",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(browser.js("window.notReloaded === true").await, json!(true));

    // A refused token brings the prompt back.
    browser
        .js("sessionStorage.setItem('beast.token', 'not-a-token')")
        .await;
    // (any API call will do; the page may have made one on its own already)
    browser
        .js("document.getElementById('main').hidden || document.querySelector('#filters button[type=submit]').click() || true")
        .await;
    browser
        .wait_js(
            "the prompt again",
            "!document.getElementById('login').hidden",
            WAIT,
        )
        .await;
    assert_eq!(
        browser.js("document.getElementById('main').hidden").await,
        json!(true)
    );
    browser.close().await;
}

/// A per-team challenge that echoes what it is sent, and a shared one whose description is
/// hostile and which offers a handout.
fn play_manifests(env: &Env) {
    env.write(
        "pt/challenge.yaml",
        &manifest(
            "pt",
            "  description: Your own echo.\n  category: pwn\n  points: 300\n  command: [nc, -ll, -p, \"1337\", -e, cat]\n  ports: [{port: 1337}]\n  instances:\n    perTeam: true\n    ttl: 10m\n    maxRenewals: 3\n    flag: {template: \"flag{pt_{random}}\", env: FLAG, file: /flag.txt}\n",
        ),
    );
    env.write(
        "xss/challenge.yaml",
        &format!(
            "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: xss\nspec:\n  description: {}\n  category: web\n  points: 100\n  tags: [warmup]\n  hints: [\"<b>not bold</b>\"]\n  flag: \"{FLAG}\"\n  attachments: [public/handout.txt]\n",
            serde_json::to_string(XSS).unwrap()
        ),
    );
    env.write("xss/public/handout.txt", "read me\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver; CI runs it with --ignored"]
async fn play_page_starts_renews_and_stops_a_team_instance() {
    let mut env = Env::new("web-play");
    play_manifests(&env);
    env.start();
    env.wait_for("the challenges to be known", WAIT, |env| {
        env.get_status("/api/v1/info/challenges")
            .is_some_and(|(_, v)| v["items"].as_array().is_some_and(|a| a.len() == 2))
    });
    let player = env.player_token("red");
    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{}/play", env.api))
        .await
        .unwrap();
    browser.login(&player).await;
    browser
        .wait_js(
            "both cards",
            "document.querySelectorAll('.card').length === 2 || null",
            WAIT,
        )
        .await;
    assert_eq!(
        browser
            .js("document.getElementById('whoami').textContent")
            .await,
        json!("team red")
    );

    // Untrusted text is text: the description shows its markup, nothing runs.
    assert_eq!(
        browser
            .js("document.querySelector('.card[data-name=xss] .desc').textContent")
            .await,
        json!(XSS)
    );
    assert_eq!(browser.js("window.pwned === undefined").await, json!(true));
    assert_eq!(browser.js("document.scripts.length").await, json!(2));
    assert_eq!(
        browser
            .js("document.querySelectorAll('main img').length")
            .await,
        json!(0)
    );
    assert_eq!(
        browser
            .js("document.querySelector('.card[data-name=xss] .attachment').textContent")
            .await,
        json!("public/handout.txt")
    );

    // Start: a connection string that works over TCP and a countdown.
    browser.click(".card[data-name=pt] button.start").await;
    let conn = browser
        .wait_js(
            "the instance's connection string",
            "(document.querySelector('.card[data-name=pt] .instance .phase.Running') && document.querySelector('.card[data-name=pt] code.connection') || {}).textContent",
            WAIT,
        )
        .await;
    let conn = conn.as_str().unwrap().to_string();
    let port: u16 = conn
        .strip_prefix("nc 127.0.0.1 ")
        .unwrap_or_else(|| panic!("connection string {conn:?}"))
        .parse()
        .unwrap();
    assert!(echo_roundtrip(port), "{conn} does not echo");
    browser.screenshot_page("play.png").await;
    browser.fits_a_phone("play-phone.png").await;

    let left = |v: Value| v.as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let first = left(
        browser
            .wait_js(
                "the countdown",
                "document.querySelector('.card[data-name=pt] .countdown').dataset.seconds",
                WAIT,
            )
            .await,
    );
    assert!(
        (500..=600).contains(&first),
        "countdown {first} s of a 10 min ttl"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = left(
        browser
            .js("document.querySelector('.card[data-name=pt] .countdown').dataset.seconds")
            .await,
    );
    assert!(later < first, "the countdown runs ({first} → {later})");
    browser.click(".card[data-name=pt] button.renew").await;
    browser
        .wait_js(
            "renew to move the countdown",
            &format!("Number(document.querySelector('.card[data-name=pt] .countdown').dataset.seconds) > {later} && document.querySelector('.card[data-name=pt] .renewals').textContent.startsWith('1/')"),
            WAIT,
        )
        .await;

    let source = browser.client.source().await.unwrap();
    assert!(!source.contains("flag{"), "a flag is on the page");
    browser.first_paint_of(&format!("{}/play", env.api)).await;

    // Stop removes the instance and its containers.
    browser
        .click(".card[data-name=pt] button.renew ~ button.stop, .card[data-name=pt] button.stop")
        .await;
    browser
        .wait_js(
            "the start button again",
            "document.querySelector('.card[data-name=pt] button.start')",
            WAIT,
        )
        .await;
    env.wait_for("the team's containers to go", WAIT, |env| {
        let filter = format!("label=beast.instance={}", env.instance);
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &filter,
            "--filter",
            "label=beast.team=red",
        ])
        .is_empty()
    });
    browser.close().await;
}
