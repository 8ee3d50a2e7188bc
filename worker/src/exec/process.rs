//! The command of one exec trial as a child process: spawned in its own
//! process group (signals reach its children too) that dies with the
//! worker, its stdout and stderr copied line by line into the trial's log.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::trial_log::TrialLog;

/// The longest output line copied whole; a longer one is cut there.
const MAX_OUTPUT_LINE: u64 = 16 * 1024;

pub(super) struct Child {
    child: std::process::Child,
    /// One message per output pipe, when it reached its end.
    pipes_done: std::sync::mpsc::Receiver<()>,
}

/// What to run and how.
pub(super) struct Launch<'a> {
    pub(super) program: &'a str,
    pub(super) args: &'a [String],
    pub(super) env: &'a [(String, String)],
    pub(super) workdir: Option<&'a Path>,
}

impl Child {
    /// Starts the command. `Err` says why it could not be started (e.g.
    /// the program is not found), for the trial's failure.
    pub(super) fn spawn(launch: &Launch, log: &Arc<Mutex<TrialLog>>) -> Result<Child, String> {
        let mut cmd = Command::new(launch.program);
        // The worker's own settings (its token among them) stay with it.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SWEEP_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(launch.args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = launch.workdir {
            cmd.current_dir(dir);
        }
        #[allow(unsafe_code)] // the one exception in the workspace (Cargo.toml's lint note)
        {
            use std::os::unix::process::CommandExt;
            // Its own group, so a terminal's Ctrl-C reaches the worker (which
            // stops it in order) and not the command directly.
            cmd.process_group(0);
            // SAFETY: only an async-signal-safe call (prctl) between fork
            // and exec.
            unsafe {
                cmd.pre_exec(|| {
                    // The command dies with the worker (even on SIGKILL).
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
                });
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            let where_ = launch.workdir.map(|d| format!(" in {}", d.display())).unwrap_or_default();
            format!("cannot start {:?}{where_}: {e}", launch.program)
        })?;
        let (tx, pipes_done) = std::sync::mpsc::channel();
        let out = child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>);
        let err = child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>);
        for pipe in [out, err].into_iter().flatten() {
            let log = Arc::clone(log);
            let tx = tx.clone();
            std::thread::Builder::new()
                .name("exec-output".into())
                .spawn(move || {
                    copy_lines(pipe, &log);
                    let _ = tx.send(());
                })
                .map_err(|e| {
                    let _ = child.kill();
                    let _ = child.wait();
                    format!("cannot start an output thread: {e}")
                })?;
        }
        Ok(Child { child, pipes_done })
    }

    /// Sends `signal` to the command's process group.
    pub(super) fn signal(&self, signal: Signal) {
        let pgid = Pid::from_raw(self.child.id() as i32);
        if let Err(e) = killpg(pgid, signal) {
            if e != nix::errno::Errno::ESRCH {
                tracing::warn!(%signal, "could not signal the trial's command: {e}");
            }
        }
    }

    pub(super) fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// After the command exited: waits up to `limit` for its output to be
    /// copied (a child it left behind may hold the pipes open; it is
    /// killed with the group).
    pub(super) fn drain_output(&self, limit: Duration) {
        self.signal(Signal::SIGKILL);
        let deadline = std::time::Instant::now() + limit;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.pipes_done.recv_timeout(left).is_err() {
                return;
            }
        }
    }
}

impl Drop for Child {
    /// A command still running when its trial is given up is killed.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn copy_lines(pipe: Box<dyn Read + Send>, log: &Mutex<TrialLog>) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    let mut failed = false;
    loop {
        line.clear();
        match (&mut reader).take(MAX_OUTPUT_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                let r =
                    log.lock().map_err(|_| std::io::Error::other("log lock poisoned")).and_then(|mut l| l.write(&line));
                if let (Err(e), false) = (r, failed) {
                    tracing::warn!("cannot write the trial's log: {e}");
                    failed = true;
                }
            }
        }
    }
}
