//! Child processes of the control plane: started with their output in a log file, killed
//! (with SIGKILL, and by the kernel if this process dies first) and reaped on drop.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::{IoContext, Result};

/// A running control-plane process.
pub struct Proc {
    name: String,
    binary: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `binary args...`, output to `log`. When `setpriv` is available the child gets
    /// `PR_SET_PDEATHSIG=SIGKILL`, so it dies with this process even on SIGKILL.
    pub fn spawn(name: &str, binary: &Path, args: &[String], log: PathBuf) -> Result<Self> {
        let out = File::create(&log).ctx(format!("creating {}", log.display()))?;
        let child = start(name, binary, args, out)?;
        Ok(Self {
            name: name.to_owned(),
            binary: binary.to_path_buf(),
            args: args.to_vec(),
            child: Some(child),
            log,
        })
    }

    /// Kills the process and starts it again with the same arguments (its data kept), the
    /// log appended: a crash and the supervisor's restart.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let out = File::options()
            .append(true)
            .open(&self.log)
            .ctx(format!("opening {}", self.log.display()))?;
        self.child = Some(start(&self.name, &self.binary, &self.args, out)?);
        Ok(())
    }

    /// Sends `signal` (e.g. SIGSTOP to freeze it, SIGCONT to let it go on).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.pid().and_then(|p| i32::try_from(p).ok());
        let sent = pid
            .ok_or_else(|| std::io::Error::other("not running"))
            .and_then(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
                    .map_err(std::io::Error::from)
            });
        sent.ctx(format!("sending {signal} to {}", self.name))
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` when the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Kills the process and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            tracing::debug!(name = %self.name, "stopped");
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `binary args...` with stdout and stderr to `out`.
fn start(name: &str, binary: &Path, args: &[String], out: File) -> Result<Child> {
    let err = out.try_clone().ctx("duplicating log handle")?;
    let mut cmd = match setpriv() {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.arg("--pdeathsig").arg("KILL").arg("--").arg(binary);
            c
        }
        None => Command::new(binary),
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let child = cmd
        .spawn()
        .ctx(format!("starting {name} ({})", binary.display()))?;
    tracing::debug!(name, pid = child.id(), "started");
    Ok(child)
}

fn setpriv() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A free TCP port on 127.0.0.1 (free when asked; callers retry on a lost race).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").ctx("binding a free port")?;
    Ok(l.local_addr().ctx("reading the port")?.port())
}
