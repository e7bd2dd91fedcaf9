//! A network namespace joined to the host by a veth pair, so a listener inside it has a
//! non-loopback address that an `Endpoints` object may name (the API refuses 127.0.0.0/8).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;

use nix::sched::{CloneFlags, setns};

use crate::error::{Error, Result};

const PREFIX: &str = "wukong-";
const LOCK: &str = "/tmp/wukong-netns.lock";

/// A network namespace owned by this process; deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    host_addr: Ipv4Addr,
    ns_addr: Ipv4Addr,
}

impl NetNs {
    /// Creates `wukong-<index>-<pid>` with a /30 from 10.213.0.0/16, removing namespaces
    /// left behind by processes that no longer exist.
    pub fn create() -> Result<Self> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .map_err(|e| Error::NetNs(format!("opening {LOCK}: {e}")))?;
        lock.lock()
            .map_err(|e| Error::NetNs(format!("locking {LOCK}: {e}")))?;
        let mut used = HashSet::new();
        for name in list()? {
            let Some((idx, pid)) = parse_name(&name) else {
                continue;
            };
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                used.insert(idx);
            } else {
                tracing::info!(netns = %name, "removing a stale network namespace");
                let _ = ip(&["netns", "del", &name]);
                let _ = ip(&["link", "del", &format!("wkh{idx}")]);
            }
        }
        let idx = (0u16..16384)
            .find(|i| !used.contains(i))
            .ok_or_else(|| Error::NetNs("no free index".into()))?;
        let name = format!("{PREFIX}{idx}-{}", std::process::id());
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + u32::from(idx) * 4;
        let ns = Self {
            name,
            host_addr: Ipv4Addr::from(base + 1),
            ns_addr: Ipv4Addr::from(base + 2),
        };
        let (host_if, ns_if) = (format!("wkh{idx}"), format!("wkn{idx}"));
        let _ = ip(&["link", "del", &host_if]);
        ip(&["netns", "add", &ns.name])?;
        // From here on, drop deletes the namespace (and with it the veth pair).
        let host_cidr = format!("{}/30", ns.host_addr);
        let ns_cidr = format!("{}/30", ns.ns_addr);
        let n = ns.name.as_str();
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", n])?;
        ip(&["addr", "add", &host_cidr, "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["-n", n, "addr", "add", &ns_cidr, "dev", &ns_if])?;
        ip(&["-n", n, "link", "set", &ns_if, "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        drop(lock);
        tracing::debug!(netns = %ns.name, addr = %ns.ns_addr, "network namespace ready");
        Ok(ns)
    }

    /// The namespace's name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address inside the namespace (the one to put in an `Endpoints`).
    pub fn address(&self) -> Ipv4Addr {
        self.ns_addr
    }

    /// The host end of the veth pair.
    pub fn host_address(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// Binds a TCP listener inside the namespace on `address():port` (0 = any port).
    pub fn bind(&self, port: u16) -> Result<TcpListener> {
        let path = format!("/run/netns/{}", self.name);
        let addr = SocketAddr::from((self.ns_addr, port));
        // setns changes the calling thread only: do it on a thread of its own. The socket
        // stays in the namespace it was made in.
        let handle = std::thread::spawn(move || -> Result<TcpListener, String> {
            let f = File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
            setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {path}: {e}"))?;
            let l = TcpListener::bind(addr).map_err(|e| format!("binding {addr}: {e}"))?;
            l.set_nonblocking(true)
                .map_err(|e| format!("non-blocking: {e}"))?;
            Ok(l)
        });
        handle
            .join()
            .map_err(|_| Error::NetNs("binding thread panicked".into()))?
            .map_err(Error::NetNs)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            tracing::warn!(netns = %self.name, "deleting network namespace: {e}");
        }
    }
}

/// Names of the existing network namespaces.
pub fn list() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

fn parse_name(name: &str) -> Option<(u16, u32)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (idx, pid) = rest.split_once('-')?;
    Some((idx.parse().ok()?, pid.parse().ok()?))
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::NetNs(format!("running `ip`: {e}")))?;
    if !out.status.success() {
        return Err(Error::NetNs(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
