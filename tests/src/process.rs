//! A child process that is stopped when its guard drops.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr going to `log`.
    ///
    /// The edge's operations listener (`RICOCHET_OPS_LISTEN`) defaults to a
    /// fixed port, which tests running side by side would fight over: unless
    /// the test chose one, each process gets a free port of its own (port 0).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        if !cmd.get_envs().any(|(k, _)| k == "RICOCHET_OPS_LISTEN") {
            cmd.env("RICOCHET_OPS_LISTEN", "127.0.0.1:0");
        }
        let out = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("cloning log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // If the test process dies (even by SIGKILL), the kernel kills this child.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc { name: name.to_owned(), child: Some(child), log: log.to_owned() }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // Backtrace frames bury the message that matters. Only the lines after
        // "stack backtrace:" are frames: anyhow's numbered causes before it
        // ("0: migration …") are the message.
        let mut in_backtrace = false;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                in_backtrace |= l.trim_start().starts_with("stack backtrace:");
                !in_backtrace
                    || (!l.trim_start().starts_with("at ")
                        && l.trim_start().split(':').next().is_none_or(|n| n.parse::<u32>().is_err()))
            })
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Panics with the log tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited early ({status}); log:\n{}", self.name, self.log_tail());
            }
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL: a crash, with no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for a graceful exit after SIGTERM and returns whether it exited 0.
    pub fn terminate_and_wait(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
