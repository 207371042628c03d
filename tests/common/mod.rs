//! Helpers shared by integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

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
