//! Where a running proxy's new configs come from: `SIGHUP`, and any change to the config file,
//! found by looking at it every [`WATCH_EVERY`]: an edit in place, a new file renamed over it,
//! or the swap of the `..data` symlink by which Kubernetes updates a ConfigMap mounted as a
//! directory (the file is read through its symlinks, so a new target is a new file). Each
//! attempt goes to [`crate::run_reloadable`], which puts a valid config to work and counts a
//! refused one; the running config stays over a refused one. Files a config names (secrets,
//! certificates) are read again at each reload, but a change to them alone needs a `SIGHUP`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::config::{Config, ConfigError, ProcessEnv};

/// How often the config file is looked at.
pub(crate) const WATCH_EVERY: Duration = Duration::from_secs(1);
/// A change is read once the file has stayed the same this long (an editor may write it in
/// several steps).
const SETTLE: Duration = Duration::from_millis(200);

/// A config read again, or why it could not be.
pub type Reload = Result<Config, ConfigError>;

/// What identifies the file's content without reading it: through its symlinks, its device,
/// inode, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        dev: metadata.dev(),
        ino: metadata.ino(),
        len: metadata.len(),
        modified: metadata.modified().ok(),
    })
}

/// Reads `path` again on `SIGHUP` and when it changes; each attempt is sent on the channel.
pub fn reloads(path: PathBuf) -> mpsc::Receiver<Reload> {
    let (sender, reloads) = mpsc::channel(1);
    let on_hangup = sender.clone();
    let hangup_path = path.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "no SIGHUP handler: the config file is still watched");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            tracing::info!(config = %hangup_path.display(), "SIGHUP: reloading the config");
            if on_hangup.send(load(&hangup_path)).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(watch(path, sender));
    reloads
}

fn load(path: &Path) -> Reload {
    crate::notify::reloading();
    Config::load(path, &ProcessEnv)
}

/// Looks at `path` every [`WATCH_EVERY`]; a changed content, once settled, is loaded and sent.
async fn watch(path: PathBuf, reloads: mpsc::Sender<Reload>) {
    let mut seen = fingerprint(&path);
    let mut content = std::fs::read(&path).ok();
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = fingerprint(&path);
        if now == seen || now.is_none() {
            // Unchanged, or gone for a moment (a swap in progress): looked at again next time.
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        if fingerprint(&path) != now {
            continue;
        }
        seen = now;
        let read = std::fs::read(&path).ok();
        if read.is_none() || read == content {
            // Touched, or renamed over with the same bytes: nothing to do.
            continue;
        }
        content = read;
        tracing::info!(config = %path.display(), "the config file changed: reloading it");
        if reloads.send(load(&path)).await.is_err() {
            return;
        }
    }
}
