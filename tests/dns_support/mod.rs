//! DNS clients and servers for the name-resolution tests: queries sent from inside a namespace
//! (UDP or TCP, with hickory-proto's wire types), a real dnsmasq in a test namespace as the
//! upstream resolver, and per-namespace resolv.conf files for `ip netns exec` (glibc's resolver
//! inside a test container, as a runtime would configure it).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use shimnet::netns::run_in;

/// What a query got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NOERROR with these A/AAAA/PTR data (as text).
    Records(Vec<String>),
    /// NOERROR without records.
    NoData,
    /// NXDOMAIN.
    NxDomain,
    /// Another response code.
    Code(ResponseCode),
    /// No reply within the timeout.
    Timeout,
}

impl Answer {
    /// The addresses of a positive answer (panics otherwise).
    pub fn addrs(&self) -> Vec<String> {
        match self {
            Answer::Records(r) => r.clone(),
            other => panic!("expected records, got {other:?}"),
        }
    }
}

/// A query message for `name`/`t` with id `id`.
pub fn query_bytes(name: &str, t: RecordType, id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.queries
        .push(Query::query(Name::from_ascii(name).expect("name"), t));
    m.to_vec().expect("encode")
}

/// Reads a reply into an [`Answer`].
pub fn answer_of(m: &Message) -> Answer {
    match m.response_code {
        ResponseCode::NXDomain => Answer::NxDomain,
        ResponseCode::NoError if m.answers.is_empty() => Answer::NoData,
        ResponseCode::NoError => Answer::Records(
            m.answers
                .iter()
                .map(|r| match &r.data {
                    RData::A(a) => a.0.to_string(),
                    RData::AAAA(a) => a.0.to_string(),
                    RData::PTR(p) => p.0.to_ascii(),
                    other => other.to_string(),
                })
                .collect(),
        ),
        c => Answer::Code(c),
    }
}

/// Sends one UDP query from the current namespace; the raw reply, if any.
pub fn udp_exchange(server: IpAddr, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.send_to(packet, (server, 53)).ok()?;
    let mut buf = vec![0u8; 65535];
    let n = s.recv(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// Asks `server` for `name`/`t` over UDP from namespace `ns` (2 s timeout, no retry).
pub fn ask(ns: &Path, server: IpAddr, name: &str, t: RecordType) -> Answer {
    let packet = query_bytes(name, t, 0x5151);
    let reply = run_in(ns, move || {
        udp_exchange(server, &packet, Duration::from_secs(2))
    })
    .expect("enter namespace");
    match reply {
        Some(b) => {
            let m = Message::from_vec(&b).expect("reply decodes");
            assert_eq!(m.id, 0x5151, "reply id");
            answer_of(&m)
        }
        None => Answer::Timeout,
    }
}

/// `ask` for an A record.
pub fn ask_a(ns: &Path, server: impl Into<IpAddr>, name: &str) -> Answer {
    ask(ns, server.into(), name, RecordType::A)
}

/// Sends one TCP query from the current namespace.
pub fn tcp_exchange(server: IpAddr, packet: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::new(server, 53), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut msg = (packet.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(packet);
    s.write_all(&msg)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// Asks over TCP from namespace `ns`.
pub fn ask_tcp(ns: &Path, server: IpAddr, name: &str, t: RecordType) -> Answer {
    let packet = query_bytes(name, t, 0x7171);
    match run_in(ns, move || {
        tcp_exchange(server, &packet, Duration::from_secs(3))
    })
    .expect("enter namespace")
    {
        Ok(b) => answer_of(&Message::from_vec(&b).expect("reply decodes")),
        Err(_) => Answer::Timeout,
    }
}

/// A dnsmasq serving `records` (`name,ipv4` host records) on `addr`:53 inside namespace `ns`,
/// forwarding nothing. Killed on drop.
pub struct Dnsmasq {
    child: Option<Child>,
    pub addr: Ipv4Addr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// None (with a SKIPPED line) when dnsmasq is not installed.
    pub fn start(ns: &str, addr: Ipv4Addr, records: &[(&str, &str)]) -> Option<Self> {
        let args: Vec<String> = records
            .iter()
            .map(|(name, ip)| format!("--host-record={name},{ip}"))
            .collect();
        Self::start_with(ns, addr, &args)
    }

    /// Like [`Dnsmasq::start`] with other options (`--addn-hosts`, `--server`, ...); without a
    /// `--server` it forwards nothing.
    pub fn start_with(ns: &str, addr: Ipv4Addr, args: &[String]) -> Option<Self> {
        if !Path::new("/usr/sbin/dnsmasq").exists() {
            eprintln!(
                "SKIPPED: dnsmasq is not installed (Debian dnsmasq-base; scripts/deps.sh test)"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("dnsmasq.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "/usr/sbin/dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-hosts",
            ])
            .arg("--bind-interfaces")
            .arg(format!("--listen-address={addr}"))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg("--log-facility=-")
            .args(args);
        if !args.iter().any(|a| a.starts_with("--server")) {
            cmd.arg("--no-resolv");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn dnsmasq");
        let d = Dnsmasq {
            child: Some(child),
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&d.log)
            .unwrap_or_default()
            .contains("started")
        {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(d)
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Sends a signal (SIGSTOP makes it a silent upstream, SIGCONT wakes it).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig)
            .expect("signal dnsmasq");
    }

    /// Stops it for good (its port is closed: queries get port unreachable).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `/etc/netns/NAME/resolv.conf`: what `ip netns exec NAME ...` sees as /etc/resolv.conf (it
/// bind-mounts the file in a private mount namespace; the host's own file is never touched).
/// Removed on drop.
pub struct NetnsResolvConf {
    dir: PathBuf,
}

impl NetnsResolvConf {
    /// Writes `nameserver`/`search` lines for namespace `name`.
    pub fn write(name: &str, nameservers: &[String], search: &[String]) -> Self {
        let dir = PathBuf::from("/etc/netns").join(name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        let mut text = String::new();
        for n in nameservers {
            text.push_str(&format!("nameserver {n}\n"));
        }
        if !search.is_empty() {
            text.push_str(&format!("search {}\n", search.join(" ")));
        }
        text.push_str("options timeout:2 attempts:1\n");
        std::fs::write(dir.join("resolv.conf"), text).expect("write resolv.conf");
        NetnsResolvConf { dir }
    }

    /// From an attach reply's (or CNI result's) `dns` member.
    pub fn from_reply(name: &str, dns: &serde_json::Value) -> Self {
        let list = |k: &str| -> Vec<String> {
            dns[k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        Self::write(name, &list("nameservers"), &list("search"))
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ip netns exec NS ping -c1 -W2 NAME` (glibc resolves NAME through the namespace's
/// resolv.conf) succeeded.
pub fn ping_name(ns: &str, name: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-W2", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `ip netns exec NS getent hosts NAME`: the address glibc resolves, if any.
pub fn getent(ns: &str, name: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "getent", "ahostsv4", name])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().map(String::from)
}
