//! Where log lines go: a buffer in memory that a thread of its own writes to standard error
//! every [`FLUSH_EVERY`], in one system call for all the lines that came meanwhile. Adding a
//! line is a copy under a lock: no system call, and nothing to wake, on the request path. A
//! buffer past [`MAX_BUFFERED`] is written by the thread that filled it (the log never drops a
//! line, and never holds more than that). [`LogGuard`], dropped at exit, writes what is left.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How often the buffer is written out.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A buffer this large is written at once.
pub(crate) const MAX_BUFFERED: usize = 1024 * 1024;

#[derive(Default)]
struct Shared {
    lines: Mutex<Vec<u8>>,
    /// Told to stop (the guard is dropped).
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes out what is buffered.
    fn flush(&self) {
        let lines = std::mem::take(&mut *self.lock());
        if !lines.is_empty() {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(&lines);
            let _ = stderr.flush();
        }
    }
}

/// A handle to add lines; cheap to clone.
#[derive(Clone)]
pub struct LogBuffer {
    shared: Arc<Shared>,
}

/// Stops the writer thread and writes what is left, when dropped.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The buffer, its writer thread started, and the guard that ends it.
pub fn start() -> (LogBuffer, LogGuard) {
    let shared = Arc::new(Shared::default());
    let writer = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || {
            loop {
                let stop = writer
                    .stop
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let (stop, _) = writer
                    .wake
                    .wait_timeout_while(stop, FLUSH_EVERY, |stop| !*stop)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let stopping = *stop;
                drop(stop);
                writer.flush();
                if stopping {
                    return;
                }
            }
        })
        .expect("the log thread starts");
    (
        LogBuffer {
            shared: shared.clone(),
        },
        LogGuard {
            shared,
            thread: Some(thread),
        },
    )
}

impl LogBuffer {
    /// Adds whole lines.
    pub fn add(&self, lines: &[u8]) {
        let mut buffer = self.shared.lock();
        buffer.extend_from_slice(lines);
        if buffer.len() >= MAX_BUFFERED {
            drop(buffer);
            self.shared.flush();
        }
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.add(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        *self
            .shared
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Lines added after the thread's last look.
        self.shared.flush();
    }
}
