//! The sandbox hosted checkout driven by a real headless Chromium: the shopper sees the amount and
//! reference, clicks "Pay" or "Cancel", and the browser lands back on the merchant's page while the
//! payment changes state.
//!
//! Approach: we speak the Chrome DevTools Protocol ourselves over one WebSocket
//! (`tokio-tungstenite`, default features off, `connect` only) to the Chromium installed on the
//! machine (Debian package `chromium`). The test needs only a handful of commands
//! (Target.createTarget/attachToTarget, Page.navigate, Runtime.evaluate, Input.dispatchMouseEvent,
//! Page.captureScreenshot), so a full client library buys little:
//! - `chromiumoxide` and `headless_chrome` compile large generated protocol crates (minutes on two
//!   cores) and bring their own WebSocket/HTTP stacks;
//! - `fantoccini` needs a second system package (`chromium-driver`) and a hyper-based client.
//!
//! `tokio-tungstenite` adds three small crates (tokio-tungstenite, tungstenite, data-encoding) and
//! reuses the `http`, `httparse`, `sha1` and `rand` already in the tree, so there is still exactly
//! one tonic/prost/hyper/http/h2. Nothing is ever downloaded: without a Chromium the tests skip
//! locally and fail under `CI=true`. Set `CHROMIUM_BIN` to use a browser at another path.
//!
//! All traffic stays on loopback: the gateway and the shop page bind 127.0.0.1, DevTools listens on
//! 127.0.0.1, and Chromium runs with background networking off, no proxy and a host resolver that
//! refuses every name except localhost.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{TestApp, spawn_app};
use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use paygate::pb::{self, PaymentStatus};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// How long Chromium may take to open its DevTools endpoint (first start on a busy CI machine).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(45);
/// How long one DevTools command may take to answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the page may take to reach an expected state (loaded, redirected).
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between polls of the page state.
const POLL: Duration = Duration::from_millis(50);

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

#[tokio::test]
async fn pay_in_browser_lands_on_return_url_and_succeeds() -> Result<()> {
    let Some(chromium) = chromium_or_skip("pay_in_browser_lands_on_return_url_and_succeeds") else { return Ok(()) };
    let app = spawn_app().await;
    let shop = Shop::start().await;
    let payment = create_payment(&app, &shop, "order-7 <browser> & co", 1234, "USD").await;

    let browser = Browser::launch(&chromium).await?;
    let mut page = browser.new_page().await?;
    page.open_checkout(&payment, "12.34 USD", "order-7 <browser> & co").await?;

    let png = page.screenshot(&browser.dir.path().join("checkout.png")).await?;
    ensure!(png.width > 0 && png.height > 0, "screenshot has an empty size: {png:?}");

    page.click_button("Pay").await?;
    let landed = page
        .wait_for("the browser to land on the return_url after clicking Pay", |s| {
            s.href == shop.return_url && s.ready == "complete" && s.text.contains("Thanks")
        })
        .await?;
    ensure!(landed.title == "Thanks", "unexpected return page: {landed:?}");

    let paid = app.get_payment(&payment.id).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded, "status after clicking Pay: {paid:?}");
    assert_eq!(shop.hits("/thanks").await, 1, "the shop's return page is fetched once");
    assert_eq!(shop.hits("/cancelled").await, 0, "the cancel page is not visited");
    Ok(())
}

#[tokio::test]
async fn cancel_in_browser_lands_on_cancel_url_and_cancels() -> Result<()> {
    let Some(chromium) = chromium_or_skip("cancel_in_browser_lands_on_cancel_url_and_cancels") else { return Ok(()) };
    let app = spawn_app().await;
    let shop = Shop::start().await;
    let payment = create_payment(&app, &shop, "order-8", 500, "JPY").await;

    let browser = Browser::launch(&chromium).await?;
    let mut page = browser.new_page().await?;
    page.open_checkout(&payment, "500 JPY", "order-8").await?;

    page.click_button("Cancel").await?;
    page.wait_for("the browser to land on the cancel_url after clicking Cancel", |s| {
        s.href == shop.cancel_url && s.ready == "complete" && s.text.contains("Order cancelled")
    })
    .await?;

    let cancelled = app.get_payment(&payment.id).await;
    assert_eq!(cancelled.status(), PaymentStatus::Cancelled, "status after clicking Cancel: {cancelled:?}");
    assert_eq!(shop.hits("/cancelled").await, 1, "the shop's cancel page is fetched once");
    assert_eq!(shop.hits("/thanks").await, 0, "the return page is not visited");

    // Back on the checkout page the payment is closed: no buttons any more.
    page.navigate(&payment.checkout_url).await?;
    let closed = page
        .wait_for("the checkout page to show the closed payment", |s| {
            s.href == payment.checkout_url && s.ready == "complete" && s.text.contains("no longer open")
        })
        .await?;
    let buttons = page.eval("document.querySelectorAll('button').length").await?;
    ensure!(buttons == 0, "a closed checkout still shows {buttons} buttons: {closed:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Test fixtures: the merchant's shop pages and the payment.

/// The merchant's site on 127.0.0.1: a return page and a cancel page.
struct Shop {
    server: MockServer,
    return_url: String,
    cancel_url: String,
}

impl Shop {
    async fn start() -> Shop {
        let server = MockServer::start().await;
        for (route, title, text) in
            [("/thanks", "Thanks", "Thanks for your order."), ("/cancelled", "Cancelled", "Order cancelled.")]
        {
            let html =
                format!("<!doctype html><html><head><title>{title}</title></head><body><p>{text}</p></body></html>");
            Mock::given(method("GET"))
                .and(path(route))
                .respond_with(ResponseTemplate::new(200).set_body_raw(html, "text/html; charset=utf-8"))
                .mount(&server)
                .await;
        }
        // Canonical URLs, so the browser's `location.href` must equal them byte for byte.
        let return_url = format!("{}/thanks?order=7", server.uri());
        let cancel_url = format!("{}/cancelled?order=7", server.uri());
        Shop { server, return_url, cancel_url }
    }

    /// GET requests the shop received for `route`.
    async fn hits(&self, route: &str) -> usize {
        let requests = self.server.received_requests().await.expect("request recording is on");
        requests.iter().filter(|r| r.method.as_str() == "GET" && r.url.path() == route).count()
    }
}

async fn create_payment(app: &TestApp, shop: &Shop, reference: &str, amount_minor: i64, currency: &str) -> pb::Payment {
    let mut request = app.checkout_request(reference, amount_minor, currency);
    request.return_url = shop.return_url.clone();
    request.cancel_url = shop.cancel_url.clone();
    let payment = app
        .grpc
        .clone()
        .create_checkout(request)
        .await
        .expect("create checkout")
        .into_inner()
        .payment
        .expect("payment");
    assert_eq!(payment.status(), PaymentStatus::Pending);
    assert!(payment.checkout_url.starts_with(&app.http), "checkout on the local server: {}", payment.checkout_url);
    payment
}

// ---------------------------------------------------------------------------------------------
// Finding and launching Chromium.

/// The Chromium to use: `$CHROMIUM_BIN`, `/usr/bin/chromium`, or `chromium`/`chromium-browser` on PATH.
fn find_chromium() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("CHROMIUM_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "CHROMIUM_BIN={} is not a file", bin.display());
        return Some(bin);
    }
    let debian = Path::new("/usr/bin/chromium");
    if debian.is_file() {
        return Some(debian.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// The Chromium binary, or `None` (after a loud message) when there is none and we are not on CI.
/// On CI (`CI=true`) a missing browser fails the test: CI installs it (see `.ci/run`).
fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(bin) = find_chromium() {
        return Some(bin);
    }
    let on_ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    assert!(
        !on_ci,
        "CI=true but no Chromium was found (looked at $CHROMIUM_BIN, /usr/bin/chromium and chromium/chromium-browser \
         on PATH); the browser tests must run on CI: install it with `apt-get install -y chromium`"
    );
    eprintln!(
        "\n\
         ########################################################################################\n\
         ## SKIPPED {test}: no Chromium found\n\
         ## (looked at $CHROMIUM_BIN, /usr/bin/chromium, chromium/chromium-browser on PATH).\n\
         ## Install it with `apt-get install -y chromium` to run the browser tests.\n\
         ########################################################################################\n"
    );
    None
}

/// A headless Chromium with a fresh profile. Dropping it kills the browser (also when the test
/// fails or panics) and then removes the temporary directory.
struct Browser {
    child: Child,
    /// DevTools endpoint, `ws://127.0.0.1:<port>/devtools/browser/<id>`.
    ws_url: String,
    /// Holds `profile/` (the user data dir), `chromium.log` and screenshots. Declared after `child`
    /// and removed after `Drop::drop` has killed the browser.
    dir: tempfile::TempDir,
}

impl Browser {
    async fn launch(bin: &Path) -> Result<Browser> {
        let dir = tempfile::Builder::new().prefix("paygate-browser-").tempdir().context("temporary directory")?;
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).context("profile directory")?;
        let log = File::create(dir.path().join("chromium.log")).context("chromium log file")?;
        let child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-quic",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                // Keep it quiet and local.
                "--no-default-browser-check",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-breakpad",
                "--no-pings",
                "--password-store=basic",
                "--no-proxy-server",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
                "--window-size=1024,768",
                // Port 0: Chromium picks a free port and writes it to <profile>/DevToolsActivePort.
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("chromium log file")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        // From here on the guard owns the process: any early return kills it.
        let mut browser = Browser { child, ws_url: String::new(), dir };

        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + LAUNCH_TIMEOUT;
        loop {
            // Two lines, "<port>\n/devtools/browser/<id>"; may be caught half written.
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let [port, ws_path] = text.lines().collect::<Vec<_>>()[..]
                && port.parse::<u16>().is_ok()
                && ws_path.starts_with("/devtools/browser/")
            {
                browser.ws_url = format!("ws://127.0.0.1:{port}{ws_path}");
                return Ok(browser);
            }
            if let Some(status) = browser.child.try_wait().context("polling chromium")? {
                bail!(
                    "Chromium ({}) exited during startup with {status}; its log:\n{}",
                    bin.display(),
                    browser.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "Chromium ({}) did not open its DevTools endpoint within {LAUNCH_TIMEOUT:?}; its log:\n{}",
                    bin.display(),
                    browser.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A new tab, attached over a fresh DevTools connection.
    async fn new_page(&self) -> Result<Page> {
        let mut cdp = Cdp::connect(&self.ws_url).await?;
        let target = cdp.call(None, "Target.createTarget", json!({ "url": "about:blank" })).await?;
        let target_id = target["targetId"].as_str().ok_or_else(|| anyhow!("no targetId in {target}"))?;
        let attached =
            cdp.call(None, "Target.attachToTarget", json!({ "targetId": target_id, "flatten": true })).await?;
        let session = attached["sessionId"].as_str().ok_or_else(|| anyhow!("no sessionId in {attached}"))?.to_owned();
        Ok(Page { cdp, session })
    }

    /// The end of Chromium's output, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SIGKILL the browser process (the Debian wrapper execs it, so this is Chromium itself) and
        // reap it. Its helper processes exit when it goes but may still write into the profile for
        // a moment, so retry removing the directory briefly rather than leak it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir_all(self.dir.path()).is_err_and(|e| e.kind() != std::io::ErrorKind::NotFound)
            && Instant::now() < deadline
        {
            std::thread::sleep(POLL);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal DevTools protocol client.

/// One DevTools WebSocket. Commands are answered in order of their ids; events and answers to
/// abandoned (timed-out) commands are skipped.
struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Cdp {
    async fn connect(url: &str) -> Result<Cdp> {
        let (ws, _) = tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| anyhow!("connecting to DevTools at {url} timed out after {CALL_TIMEOUT:?}"))?
            .with_context(|| format!("connecting to DevTools at {url}"))?;
        Ok(Cdp { ws, next_id: 0 })
    }

    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = session.into();
        }
        let exchange = async {
            self.ws.send(Message::Text(command.to_string().into())).await.context("sending to DevTools")?;
            loop {
                let frame = self
                    .ws
                    .next()
                    .await
                    .ok_or_else(|| anyhow!("DevTools closed the connection"))?
                    .context("reading from DevTools")?;
                let Message::Text(text) = frame else { continue };
                let mut reply: Value = serde_json::from_str(text.as_str()).context("DevTools sent invalid JSON")?;
                if reply["id"].as_u64() != Some(id) {
                    continue;
                }
                if let Some(error) = reply.get("error") {
                    bail!("DevTools {method} failed: {error}");
                }
                return Ok(reply["result"].take());
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("DevTools {method} got no answer within {CALL_TIMEOUT:?}"))?
    }
}

/// What the page shows at one moment.
#[derive(Debug, Default)]
struct Snapshot {
    href: String,
    ready: String,
    title: String,
    text: String,
}

#[derive(Debug)]
struct Png {
    width: u32,
    height: u32,
}

/// One tab.
struct Page {
    cdp: Cdp,
    session: String,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.cdp.call(Some(&self.session), method, params).await
    }

    async fn navigate(&mut self, url: &str) -> Result<()> {
        let result = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(error) = result.get("errorText").and_then(Value::as_str) {
            bail!("navigating to {url} failed: {error}");
        }
        Ok(())
    }

    /// Evaluates `expression` in the page and returns its value as JSON.
    async fn eval(&mut self, expression: &str) -> Result<Value> {
        let mut result =
            self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true })).await?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("script threw: {exception}");
        }
        Ok(result["result"]["value"].take())
    }

    async fn snapshot(&mut self) -> Result<Snapshot> {
        let value = self
            .eval(
                "({ href: location.href, ready: document.readyState, title: document.title, \
                    text: document.body ? document.body.innerText : '' })",
            )
            .await?;
        let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
        Ok(Snapshot { href: field("href"), ready: field("ready"), title: field("title"), text: field("text") })
    }

    /// Polls the page until `done` holds, for at most `WAIT_TIMEOUT`. Errors while polling (say,
    /// a context torn down mid-navigation) count as "not yet"; the last one is reported.
    async fn wait_for(&mut self, what: &str, done: impl Fn(&Snapshot) -> bool) -> Result<Snapshot> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        let mut last = Err(anyhow!("the page was never read"));
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            last = match tokio::time::timeout(remaining, self.snapshot()).await {
                Ok(Ok(snapshot)) if done(&snapshot) => return Ok(snapshot),
                Ok(result) => result,
                Err(_) => last,
            };
            if Instant::now() >= deadline {
                let seen = match last {
                    Ok(snapshot) => format!("{snapshot:#?}"),
                    Err(e) => format!("error: {e:#}"),
                };
                bail!("timed out after {WAIT_TIMEOUT:?} waiting for {what}; last seen: {seen}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Opens the checkout page and checks what the shopper sees.
    async fn open_checkout(&mut self, payment: &pb::Payment, amount: &str, reference: &str) -> Result<()> {
        self.navigate(&payment.checkout_url).await?;
        self.wait_for("the checkout page to load", |s| {
            s.href == payment.checkout_url && s.ready == "complete" && s.title == "Sandbox checkout"
        })
        .await?;
        let shown = self
            .eval(
                "({ amount: document.getElementById('amount')?.textContent, \
                    reference: document.getElementById('reference')?.textContent, \
                    payment: document.getElementById('payment-id')?.textContent })",
            )
            .await?;
        ensure!(shown["amount"] == amount, "checkout page should show amount {amount:?}: {shown}");
        ensure!(shown["reference"] == reference, "checkout page should show reference {reference:?}: {shown}");
        ensure!(shown["payment"] == payment.id.as_str(), "checkout page should show payment {}: {shown}", payment.id);
        Ok(())
    }

    /// Clicks the one button whose label is exactly `label`, with real mouse input at its centre
    /// (trusted events through the browser's input pipeline, as a shopper's click).
    async fn click_button(&mut self, label: &str) -> Result<()> {
        let label_js = serde_json::to_string(label)?;
        let located = self
            .eval(&format!(
                "(() => {{
                    const label = {label_js};
                    const found = [...document.querySelectorAll('button')].filter(b => b.textContent.trim() === label);
                    if (found.length !== 1) return {{ error: `${{found.length}} buttons labelled ${{label}}` }};
                    const button = found[0];
                    button.scrollIntoView({{ block: 'center', inline: 'center' }});
                    const r = button.getBoundingClientRect();
                    const x = r.left + r.width / 2, y = r.top + r.height / 2;
                    const hit = document.elementFromPoint(x, y);
                    if (!(hit && (hit === button || button.contains(hit)))) {{
                        return {{ error: `its centre (${{x}}, ${{y}}) is covered by ${{hit && hit.outerHTML}}` }};
                    }}
                    if (button.disabled) return {{ error: 'the button is disabled' }};
                    return {{ x, y }};
                }})()"
            ))
            .await?;
        if let Some(error) = located.get("error") {
            bail!("cannot click the button labelled {label:?}: {error}");
        }
        let (x, y) = (located["x"].as_f64(), located["y"].as_f64());
        let (Some(x), Some(y)) = (x, y) else { bail!("no position for the button labelled {label:?}: {located}") };
        self.call("Input.dispatchMouseEvent", json!({ "type": "mouseMoved", "x": x, "y": y })).await?;
        for kind in ["mousePressed", "mouseReleased"] {
            let event = json!({ "type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1 });
            self.call("Input.dispatchMouseEvent", event).await.with_context(|| format!("clicking {label:?}"))?;
        }
        Ok(())
    }

    /// Saves a PNG screenshot of the viewport to `to` and checks it is a PNG.
    async fn screenshot(&mut self, to: &Path) -> Result<Png> {
        let result = self.call("Page.captureScreenshot", json!({ "format": "png" })).await?;
        let data = result["data"].as_str().ok_or_else(|| anyhow!("no screenshot data"))?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).context("screenshot is not base64")?;
        std::fs::write(to, &bytes).with_context(|| format!("writing {}", to.display()))?;
        let saved = std::fs::read(to)?;
        ensure!(
            saved.len() > 24 && saved.starts_with(PNG_SIGNATURE),
            "screenshot is not a PNG ({} bytes)",
            saved.len()
        );
        ensure!(&saved[12..16] == b"IHDR", "screenshot PNG does not start with IHDR");
        let be = |at: usize| u32::from_be_bytes([saved[at], saved[at + 1], saved[at + 2], saved[at + 3]]);
        Ok(Png { width: be(16), height: be(20) })
    }
}
