//! Small helpers shared across the crate.
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` atomically: a temp file in the same folder, then rename, so a
/// killed run never leaves a half-written file where a good one was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| std::io::Write::write_all(w, bytes))
}

/// [`write_atomic`] for content written piece by piece: `fill` writes into the temp file, which
/// replaces `path` only when it succeeded (a failed one is removed; `path` keeps its old content).
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>) -> Result<()> {
    use std::io::Write;
    if path.is_dir() {
        anyhow::bail!("{} is a folder, not a file name to write", path.display());
    }
    let tmp = tmp_path(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
    }
    let written = std::fs::File::create(&tmp).and_then(|f| {
        let mut w = std::io::BufWriter::new(f);
        fill(&mut w)?;
        w.flush()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Parses a count that must be at least 1 (`--batch`): 0 is refused, not taken as 1.
pub fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}")),
    }
}

/// The temp name used by [`write_atomic`]: `<name>.tmp` beside the target.
pub fn tmp_path(path: &Path) -> PathBuf {
    beside(path, ".tmp")
}

/// `<name><suffix>` beside `path` (its temp file, part files, progress record).
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// Hex SHA-256 of a file (identifies the weights a code file came from).
pub fn sha256_file(path: &Path) -> Result<String> {
    // Streamed: code files can be larger than memory.
    let mut hasher = Sha256::new();
    std::fs::File::open(path)
        .and_then(|mut f| std::io::copy(&mut f, &mut hasher))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(to_hex(&hasher.finalize()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

fn to_hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A progress bar that stays quiet when stderr is not a terminal (CI logs, tests).
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Keep freed memory in the process instead of returning it to the OS: training allocates
/// and frees the same large activation buffers every step, and glibc's default (mmap above
/// 128 KiB, trim on free) turned each of them into fresh page faults (~5 % of a decoder step).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Run `f` on one of rayon's worker threads, the CPU backend's, while the calling thread
/// waits. Every CPU kernel splits its work with rayon: called from outside the pool, each op
/// is queued, a sleeping worker woken and the caller put to sleep until it is done, two thread
/// switches per op that were 20 % of a one-image decoder forward on 2 cores. Called on a
/// worker, the op starts at once and the other workers take halves of it, as PyTorch's main
/// thread joins its OpenMP team; with one worker (`RAYON_NUM_THREADS=1`) every op then runs
/// inline, where from outside it paid the two switches for no parallelism (one thread: AlexNet
/// optimization iteration 32–36 → 25–26 ms, one-image decoder forward 1.2–1.4 → 0.87 ms).
/// Code that waits on this thread for other threads' CPU ops must not, with one worker, hold
/// the only worker: see [`crate::train::parallel::each`].
/// Workers get the main thread's 8 MiB stack (rayon's default is 2 MiB) when this is the
/// first use of rayon in the process.
pub fn on_cpu_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let _ = rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build_global();
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}

/// CPU threads to use: the size of the CPU backend's pool (every core, or `RAYON_NUM_THREADS`),
/// so that one setting bounds the image decoders, the renderer and the optimizer too.
pub fn cpu_threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// End quietly when the reader of our output goes away (`preimage render ... | head`), as
/// command-line tools do, instead of Rust's panic with a backtrace on the next `println!`.
pub fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_atomic_write_keeps_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        super::write_atomic(&p, b"good").unwrap();
        let err = super::write_atomic_with(&p, |w| {
            std::io::Write::write_all(w, b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("out.bin.tmp") && format!("{err:#}").contains("disk full"), "{err:#}");
        assert_eq!(std::fs::read(&p).unwrap(), b"good");
        assert!(!super::tmp_path(&p).exists());
        // A folder in the way is named before anything is written.
        let err = super::write_atomic(dir.path(), b"x").unwrap_err().to_string();
        assert!(err.contains("is a folder"), "{err}");
        assert!(!super::tmp_path(dir.path()).exists());
    }

    #[test]
    fn counts_of_zero_are_refused() {
        assert_eq!(super::at_least_one(" 64"), Ok(64));
        assert_eq!(super::at_least_one("0"), Err("must be at least 1".into()));
        assert!(super::at_least_one("-3").is_err());
    }

    #[test]
    fn on_cpu_workers_runs_on_a_worker_and_returns() {
        let (index, sum) = super::on_cpu_workers(|| (rayon::current_thread_index(), (1..=100u32).sum::<u32>()));
        assert_eq!(sum, 5050);
        assert!(index.is_some(), "ran outside the pool of {}", rayon::current_num_threads());
        let panicked = std::panic::catch_unwind(|| super::on_cpu_workers(|| panic!("in the pool")));
        assert!(panicked.is_err(), "a panic on the worker reaches the caller");
    }

    /// The vendored rayon-core keeps idle workers looking for work for a while before they
    /// sleep: work that comes during the spin, after it (workers asleep) and from outside the
    /// pool must all run, on every worker.
    #[test]
    fn workers_take_work_while_spinning_and_after_sleeping() {
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for pause_ms in [0u64, 0, 30, 1, 30] {
            std::thread::sleep(std::time::Duration::from_millis(pause_ms));
            let (sum, threads) = pool.install(|| {
                let sum: u64 = (0..100_000u64).into_par_iter().map(|i| i * i % 7).sum();
                let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
                rayon::broadcast(|ctx| seen.lock().unwrap().insert(ctx.index()));
                (sum, seen.into_inner().unwrap().len())
            });
            assert_eq!(sum, (0..100_000u64).map(|i| i * i % 7).sum::<u64>(), "after {pause_ms} ms idle");
            assert_eq!(threads, 3, "every worker ran after {pause_ms} ms idle");
        }
    }
}
