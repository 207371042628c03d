//! Helpers shared by integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// A Python with torch and safetensors (`$PREIMAGE_PYTHON`, else `python3`), for the checks
/// against PyTorch; `None` (the caller skips them with a message) where there is none: torch is
/// too large to install for a test.
pub fn python_with_torch() -> Option<PathBuf> {
    let python = std::env::var_os("PREIMAGE_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("python3"));
    (python_has(&python, "torch") && python_has(&python, "safetensors")).then_some(python)
}

/// Run a Python script with `python/` (our PyTorch modules) importable; panics with its output
/// when it fails, returns the output otherwise.
pub fn run_python(python: &Path, script: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let out = Command::new(python).args(["-c", &format!("import sys; sys.path.insert(0, {:?})\n{script}", dir.display().to_string())]).output().expect("run python");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "python failed:\n{script}\n{text}");
    text
}

/// Whether `python -c "import <module>"` succeeds.
pub fn python_has(python: &Path, module: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python interpreter that can `import module`.
///
/// Tries `$PREIMAGE_PYTHON`, then `python3`; if the system Python lacks the module, installs
/// `pip_pkgs` into a venv cached under the cargo target dir (`<target>/tmp/pyvenv`, shared by
/// all tests and made once) and returns its interpreter.
///
/// Returns `None` only when no Python interpreter exists. If Python exists but the venv or
/// the install fails, this panics with pip's output: a broken setup should fail loudly rather
/// than silently skip the check.
pub fn python_with(module: &str, pip_pkgs: &[&str]) -> Option<PathBuf> {
    let system = std::env::var_os("PREIMAGE_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("python3")])
        .find(|p| python_runs(p))?;
    if python_has(&system, module) {
        return Some(system);
    }

    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyvenv");
    let vpy = venv.join("bin").join("python");
    // Tests in one binary run in parallel and binaries may run concurrently: serialize set-up.
    let _lock = DirLock::acquire(&venv.with_extension("lock"));
    if python_has(&vpy, module) {
        return Some(vpy);
    }
    if !python_runs(&vpy) {
        run_or_panic(Command::new(&system).arg("-m").arg("venv").arg(&venv), "creating venv");
    }
    // `python -m pip` rather than `bin/pip`, whose shebang breaks if the dir is ever moved.
    run_or_panic(
        Command::new(&vpy).args(["-m", "pip", "install", "--disable-pip-version-check", "-q"]).args(pip_pkgs),
        &format!("pip install {}", pip_pkgs.join(" ")),
    );
    assert!(python_has(&vpy, module), "{} still cannot import {module} after pip install", vpy.display());
    Some(vpy)
}

fn python_runs(python: &Path) -> bool {
    Command::new(python)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_or_panic(cmd: &mut Command, what: &str) {
    eprintln!("test setup: {what} ...");
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Cross-process lock held as an exclusively created file (std's `File::lock` is too new
/// to rely on). A lock older than 20 minutes is taken to be left by a killed run.
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(path: &Path) -> DirLock {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        loop {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(_) => return DirLock(path.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > Duration::from_secs(20 * 60));
                    if stale {
                        let _ = std::fs::remove_file(path);
                    } else {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                Err(e) => panic!("cannot create lock file {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium: does an HTML report render cleanly?
// ---------------------------------------------------------------------------------------------

/// What headless Chromium saw when it loaded a page (see [`check_in_chromium`]).
#[derive(Debug)]
pub struct PageCheck {
    /// Console errors, uncaught exceptions and error-level log entries (e.g. a resource that
    /// failed to load).
    pub console_errors: Vec<String>,
    /// Every `<img>` of the document after all of them settled.
    pub images: Vec<ImgLoad>,
    pub title: String,
    /// `document.body.innerText`: what a reader sees.
    pub text: String,
    /// Number of `<table>` and `<svg>` elements.
    pub tables: usize,
    pub svgs: usize,
    /// The full-page screenshot that was written, and its size in pixels.
    pub screenshot: PathBuf,
    pub screenshot_size: (u32, u32),
}

/// One `<img>` as the browser loaded it.
#[derive(Debug)]
pub struct ImgLoad {
    /// The `src` attribute (first 100 characters).
    pub src: String,
    pub complete: bool,
    pub natural_width: u32,
    pub natural_height: u32,
}

impl PageCheck {
    /// Images that did not load (`naturalWidth == 0`).
    pub fn broken_images(&self) -> Vec<&ImgLoad> {
        self.images.iter().filter(|i| !i.complete || i.natural_width == 0 || i.natural_height == 0).collect()
    }

    /// Console errors and broken images, one line each; empty when the page is clean.
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = self.console_errors.iter().map(|e| format!("console error: {e}")).collect();
        p.extend(self.broken_images().iter().map(|i| format!("image did not load: {}", i.src)));
        p
    }

    /// Panics listing every problem.
    pub fn assert_clean(&self) {
        let p = self.problems();
        assert!(p.is_empty(), "page does not render cleanly (screenshot {}):\n  {}", self.screenshot.display(), p.join("\n  "));
    }
}

/// Chromium's executable: `$PREIMAGE_CHROMIUM`, `/usr/bin/chromium`, or `chromium` /
/// `chromium-browser` on PATH. When missing, installs Debian's `chromium` package with apt
/// — only as root and only when `CI` or `PREIMAGE_INSTALL_CHROMIUM=1` is set, so a
/// developer's machine is never changed behind their back. `None` (after printing why)
/// when there is no browser.
pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PREIMAGE_CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "PREIMAGE_CHROMIUM={} is not a file", p.display());
        return Some(p);
    }
    if let Some(p) = find_chromium() {
        return Some(p);
    }
    let wanted = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
        || std::env::var("PREIMAGE_INSTALL_CHROMIUM").is_ok_and(|v| v == "1");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !wanted || !root {
        eprintln!(
            "SKIPPED: Chromium not found (/usr/bin/chromium or chromium on PATH); install Debian's `chromium` \
             package, set PREIMAGE_CHROMIUM=/path/to/chromium, or run as root with PREIMAGE_INSTALL_CHROMIUM=1 \
             (or CI set) to let the test install it{}",
            if wanted { " (not root, so not installing)" } else { "" }
        );
        return None;
    }
    // Tests run in parallel and test binaries may too: one installer at a time.
    let _lock = DirLock::acquire(&std::env::temp_dir().join("preimage-chromium-install.lock"));
    if let Some(p) = find_chromium() {
        return Some(p);
    }
    let install = || {
        eprintln!("test setup: apt-get install chromium ...");
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", "chromium", "fonts-dejavu-core"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    let mut out = install();
    if !out.as_ref().is_ok_and(|o| o.status.success()) {
        // Stale or missing package lists (fresh containers ship none): refresh once and retry.
        let _ = Command::new("apt-get").args(["update", "-q"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        out = install();
    }
    match (&out, find_chromium()) {
        (_, Some(p)) => Some(p),
        (Ok(o), None) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            eprintln!("SKIPPED: could not install Chromium (apt-get {:?}):\n{}", o.status, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            None
        }
        (Err(e), None) => {
            eprintln!("SKIPPED: could not install Chromium: cannot run apt-get: {e}");
            None
        }
    }
}

fn find_chromium() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/chromium");
    if fixed.is_file() {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// Loads `html` in headless Chromium, waits until every image has loaded or failed, writes a
/// full-page PNG screenshot to `screenshot` and reports console errors, image loads and what
/// the page shows. `None` (with a printed message) when Chromium is unavailable, see
/// [`chromium`]; set `PREIMAGE_REQUIRE_CHROMIUM=1` to make that a failure instead.
///
/// Talks the DevTools protocol over `--remote-debugging-pipe` (fds 3/4, NUL-separated JSON),
/// so the page needs no script of its own and no port or extra crate is involved. Panics if
/// Chromium exists but the session fails (a broken browser must not pass for a clean page).
pub fn check_in_chromium(html: &Path, screenshot: &Path) -> Option<PageCheck> {
    let Some(exe) = chromium() else {
        assert!(
            std::env::var("PREIMAGE_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "PREIMAGE_REQUIRE_CHROMIUM=1 but Chromium is not available"
        );
        return None;
    };
    let html = html.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", html.display()));
    let profile = tempfile::tempdir().expect("temp dir for the Chromium profile");
    let mut session = Cdp::launch(&exe, profile.path());
    let check = session.check(&html, screenshot);
    session.close();
    Some(check.unwrap_or_else(|e| panic!("headless Chromium ({}) failed on {}: {e}\nChromium's stderr (last lines):\n{}", exe.display(), html.display(), session.stderr_tail())))
}

/// `file://` URL of an absolute path, percent-encoding everything but unreserved characters and `/`.
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// A DevTools-protocol session with one Chromium process over its debugging pipe.
struct Cdp {
    child: std::process::Child,
    to_browser: Option<std::fs::File>,
    from_browser: std::sync::mpsc::Receiver<serde_json::Value>,
    next_id: u64,
    /// Events received while waiting for replies, oldest first.
    events: std::collections::VecDeque<serde_json::Value>,
    stderr_path: PathBuf,
}

const CDP_TIMEOUT: Duration = Duration::from_secs(90);

impl Cdp {
    fn launch(exe: &Path, profile: &Path) -> Cdp {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let pipe = || {
            let mut fds = [0i32; 2];
            // SAFETY: fds is a valid 2-element array; O_CLOEXEC keeps our ends out of the child.
            let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
            assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
            // SAFETY: both fds were just created and are owned by nobody else.
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
        };
        let (browser_reads, we_write) = pipe();
        let (we_read, browser_writes) = pipe();
        let stderr_path = profile.join("chromium-stderr.log");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--disable-breakpad",
            "--mute-audio",
            "--hide-scrollbars",
            "--window-size=1280,1000",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("chromium stderr log"));
        let (r, w) = (std::os::fd::AsRawFd::as_raw_fd(&browser_reads), std::os::fd::AsRawFd::as_raw_fd(&browser_writes));
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. The pipe
        // ends are first moved above fd 10 so that placing them on 3 and 4 cannot clobber
        // one with the other; dup2 clears close-on-exec on the copies Chromium gets.
        unsafe {
            cmd.pre_exec(move || {
                let r2 = libc::fcntl(r, libc::F_DUPFD_CLOEXEC, 10);
                let w2 = libc::fcntl(w, libc::F_DUPFD_CLOEXEC, 10);
                if r2 < 0 || w2 < 0 || libc::dup2(r2, 3) < 0 || libc::dup2(w2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        drop((browser_reads, browser_writes)); // so that we see EOF when Chromium exits
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::fs::File::from(we_read);
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut r = std::io::BufReader::new(reader);
            let mut buf = Vec::new();
            while r.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice(&buf) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                buf.clear();
            }
        });
        Cdp { child, to_browser: Some(std::fs::File::from(we_write)), from_browser: rx, next_id: 0, events: Default::default(), stderr_path }
    }

    fn recv(&mut self, deadline: std::time::Instant) -> Result<serde_json::Value, String> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        self.from_browser.recv_timeout(left).map_err(|e| match e {
            std::sync::mpsc::RecvTimeoutError::Timeout => format!("no answer from Chromium within {CDP_TIMEOUT:?}"),
            std::sync::mpsc::RecvTimeoutError::Disconnected => "Chromium closed the debugging pipe (exited?)".into(),
        })
    }

    /// Sends a command and waits for its reply; events that arrive meanwhile are kept.
    fn call(&mut self, method: &str, params: serde_json::Value, session: Option<&str>) -> Result<serde_json::Value, String> {
        use std::io::Write;
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = serde_json::json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        let pipe = self.to_browser.as_mut().ok_or("pipe closed")?;
        pipe.write_all(&bytes).map_err(|e| format!("writing {method} to Chromium: {e}"))?;
        let deadline = std::time::Instant::now() + CDP_TIMEOUT;
        loop {
            let v = self.recv(deadline).map_err(|e| format!("{method}: {e}"))?;
            if v["id"].as_u64() == Some(id) {
                if let Some(err) = v.get("error") {
                    return Err(format!("{method} failed: {err}"));
                }
                return Ok(v["result"].clone());
            }
            self.events.push_back(v);
        }
    }

    /// Waits for an event `method` whose params satisfy `pred` and returns the params.
    fn wait_event(&mut self, method: &str, pred: impl Fn(&serde_json::Value) -> bool) -> Result<serde_json::Value, String> {
        let hit = |v: &serde_json::Value| v["method"] == method && pred(&v["params"]);
        if let Some(k) = self.events.iter().position(hit) {
            return Ok(self.events.remove(k).unwrap()["params"].clone());
        }
        let deadline = std::time::Instant::now() + CDP_TIMEOUT;
        loop {
            let v = self.recv(deadline).map_err(|e| format!("waiting for {method}: {e}"))?;
            if hit(&v) {
                return Ok(v["params"].clone());
            }
            self.events.push_back(v);
        }
    }

    fn check(&mut self, html: &Path, screenshot: &Path) -> Result<PageCheck, String> {
        use serde_json::json;
        let target = self.call("Target.createTarget", json!({ "url": "about:blank" }), None)?;
        let target_id = target["targetId"].as_str().ok_or("no targetId")?.to_string();
        let attached = self.call("Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }), None)?;
        let sid = attached["sessionId"].as_str().ok_or("no sessionId")?.to_string();
        let s = Some(sid.as_str());
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            self.call(domain, json!({}), s)?;
        }
        self.call("Page.setLifecycleEventsEnabled", json!({ "enabled": true }), s)?;
        self.call("Emulation.setDeviceMetricsOverride", json!({ "width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": false }), s)?;
        let mut console_errors = Vec::new();
        let url = file_url(html);
        let nav = self.call("Page.navigate", json!({ "url": url }), s)?;
        if let Some(e) = nav["errorText"].as_str() {
            return Err(format!("navigation to {url} failed: {e}"));
        }
        // The load event of this navigation (not a late one of the blank start page).
        let loader = nav["loaderId"].clone();
        self.wait_event("Page.lifecycleEvent", |p| p["name"] == "load" && p["loaderId"] == loader)?;
        // The load event waits for images, but wait explicitly for any still pending too.
        let probe = r#"(async () => {
            const imgs = Array.from(document.images);
            await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
            return {
                href: location.href,
                title: document.title,
                text: document.body ? document.body.innerText : '',
                tables: document.querySelectorAll('table').length,
                svgs: document.querySelectorAll('svg').length,
                images: imgs.map(i => ({ src: (i.getAttribute('src') || '').slice(0, 100), complete: i.complete, w: i.naturalWidth, h: i.naturalHeight })),
            };
        })()"#;
        let r = self.call("Runtime.evaluate", json!({ "expression": probe, "awaitPromise": true, "returnByValue": true }), s)?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("page probe threw: {ex}"));
        }
        let v = &r["result"]["value"];
        if v["href"] != url.as_str() {
            return Err(format!("probed {} instead of {url}", v["href"]));
        }
        let images = v["images"]
            .as_array()
            .ok_or_else(|| format!("unexpected probe result {r}"))?
            .iter()
            .map(|i| ImgLoad {
                src: i["src"].as_str().unwrap_or_default().to_string(),
                complete: i["complete"].as_bool().unwrap_or(false),
                natural_width: i["w"].as_u64().unwrap_or(0) as u32,
                natural_height: i["h"].as_u64().unwrap_or(0) as u32,
            })
            .collect();

        let metrics = self.call("Page.getLayoutMetrics", json!({}), s)?;
        let size = &metrics["cssContentSize"];
        let (w, h) = (size["width"].as_f64().unwrap_or(1200.0).ceil(), size["height"].as_f64().unwrap_or(900.0).ceil().min(16000.0));
        let shot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true, "clip": { "x": 0, "y": 0, "width": w, "height": h, "scale": 1 } }),
            s,
        )?;
        let png = base64_decode(shot["data"].as_str().ok_or("screenshot without data")?).ok_or("screenshot is not base64")?;
        let decoded = image::load_from_memory(&png).map_err(|e| format!("screenshot is not a PNG: {e}"))?;
        if let Some(dir) = screenshot.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(screenshot, &png).map_err(|e| format!("{}: {e}", screenshot.display()))?;

        // Everything the page logged up to now is in the queue (the replies above came after it).
        for e in self.events.drain(..) {
            let p = &e["params"];
            match e["method"].as_str() {
                Some("Runtime.consoleAPICalled") if matches!(p["type"].as_str(), Some("error" | "assert")) => {
                    let args: Vec<String> = p["args"].as_array().into_iter().flatten().map(|a| a["value"].as_str().map(String::from).unwrap_or_else(|| a["description"].to_string())).collect();
                    console_errors.push(format!("console.{}: {}", p["type"].as_str().unwrap(), args.join(" ")));
                }
                Some("Runtime.exceptionThrown") => {
                    let d = &p["exceptionDetails"];
                    console_errors.push(format!("uncaught: {}", d["exception"]["description"].as_str().or(d["text"].as_str()).unwrap_or("?")));
                }
                Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                    let en = &p["entry"];
                    console_errors.push(format!("{}: {} {}", en["source"].as_str().unwrap_or("log"), en["text"].as_str().unwrap_or(""), en["url"].as_str().unwrap_or("")).trim().to_string());
                }
                _ => {}
            }
        }
        Ok(PageCheck {
            console_errors,
            images,
            title: v["title"].as_str().unwrap_or_default().to_string(),
            text: v["text"].as_str().unwrap_or_default().to_string(),
            tables: v["tables"].as_u64().unwrap_or(0) as usize,
            svgs: v["svgs"].as_u64().unwrap_or(0) as usize,
            screenshot: screenshot.to_path_buf(),
            screenshot_size: (decoded.width(), decoded.height()),
        })
    }

    /// Asks Chromium to quit, then makes sure it did.
    fn close(&mut self) {
        let _ = self.call("Browser.close", serde_json::json!({}), None);
        self.to_browser = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stderr_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Cdp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Standard base64 (RFC 4648, padding optional, whitespace ignored); `None` if malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let body = bytes.strip_suffix(b"==").or_else(|| bytes.strip_suffix(b"=")).unwrap_or(&bytes);
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut n = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            n |= (val(c)? as u32) << (18 - 6 * k);
        }
        out.extend(&n.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

/// Every `<img src>` of an HTML file, decoded without a browser: data URIs are base64-decoded,
/// other sources are read relative to the file. Each entry is the source (first 100
/// characters) and the decoded size or why it failed. Catches a corrupt or missing image
/// even where no browser is available.
pub fn decode_images_offline(html: &Path) -> Vec<(String, Result<(u32, u32), String>)> {
    let text = std::fs::read_to_string(html).unwrap_or_else(|e| panic!("{}: {e}", html.display()));
    let dir = html.parent().unwrap_or(Path::new("."));
    let lower = text.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(k) = lower[from..].find("<img") {
        let start = from + k;
        let end = lower[start..].find('>').map_or(lower.len(), |e| start + e);
        from = end;
        let tag = &text[start..end];
        let Some(a) = tag.to_ascii_lowercase().find(" src=") else {
            out.push((tag.chars().take(100).collect(), Err("<img> without src".into())));
            continue;
        };
        let rest = &tag[a + 5..];
        let src = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or(""),
            _ => rest.split(|c: char| c.is_whitespace()).next().unwrap_or(""),
        };
        let src = src.replace("&amp;", "&").replace("&quot;", "\"");
        let bytes = if let Some(data) = src.strip_prefix("data:") {
            match data.split_once(";base64,") {
                Some((_, b64)) => base64_decode(b64).ok_or_else(|| "data URI is not valid base64".to_string()),
                None => Err("data URI is not base64".to_string()),
            }
        } else {
            let p = dir.join(src.split(['?', '#']).next().unwrap_or(""));
            std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
        };
        let decoded = bytes.and_then(|b| image::load_from_memory(&b).map(|i| (i.width(), i.height())).map_err(|e| format!("not a decodable image: {e}")));
        out.push((src.chars().take(100).collect(), decoded));
    }
    out
}

/// Run the `preimage` binary; (success, stdout + stderr). `$PREIMAGE_BIN` names another build
/// of it (bench/gpu_check.sh runs a variant's tests/cuda.rs with that variant's binary).
pub fn preimage(args: &[&str]) -> (bool, String) {
    let bin = std::env::var_os("PREIMAGE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_preimage").into());
    let out = Command::new(bin).args(args).output().expect("run preimage");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Run the `preimage` binary and fail the test with its output if it fails.
pub fn ok(args: &[&str]) -> String {
    let (success, text) = preimage(args);
    assert!(success, "preimage {args:?} failed:\n{text}");
    text
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
