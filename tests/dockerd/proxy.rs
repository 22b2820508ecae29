//! A timing proxy between dockerd and a plugin socket: it listens where dockerd looks for the
//! plugin, forwards each HTTP/1.1 request (keep-alive connections, `Content-Length` bodies, as
//! dockerd's plugin client and shimnetd speak) to the real socket and records, per call, how
//! long dockerd waited: from the request's first byte to the reply's last.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One call as dockerd saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Request path, e.g. `/NetworkDriver.Join`.
    pub path: String,
    /// When its first byte arrived.
    pub at: Instant,
    /// First request byte to last reply byte.
    pub took: Duration,
}

/// A running proxy; stops accepting when dropped (connections end with dockerd's).
pub struct PluginProxy {
    /// Calls seen so far, in order of completion.
    pub calls: Arc<Mutex<Vec<Call>>>,
    socket: PathBuf,
}

/// Reads one HTTP message head (through the empty line) and its `Content-Length` body; `None` at
/// end of stream. Returns the head's first line and the whole message.
fn message(r: &mut BufReader<UnixStream>) -> Option<(String, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut first = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        raw.extend_from_slice(line.as_bytes());
        if first.is_empty() {
            first = line.trim_end().to_string();
        } else if line == "\r\n" {
            break;
        } else if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    raw.extend_from_slice(&body);
    Some((first, raw))
}

fn serve(client: UnixStream, upstream: &Path, calls: &Mutex<Vec<Call>>) -> Option<()> {
    let mut to_client = client.try_clone().ok()?;
    let mut from_client = BufReader::new(client);
    let up = UnixStream::connect(upstream).ok()?;
    let mut to_up = up.try_clone().ok()?;
    let mut from_up = BufReader::new(up);
    loop {
        // The clock starts when the request's first byte is readable.
        from_client.fill_buf().ok()?;
        let at = Instant::now();
        let (line, req) = message(&mut from_client)?;
        to_up.write_all(&req).ok()?;
        let (_, reply) = message(&mut from_up)?;
        to_client.write_all(&reply).ok()?;
        let path = line.split_whitespace().nth(1).unwrap_or("?").to_string();
        calls.lock().unwrap().push(Call {
            path,
            at,
            took: at.elapsed(),
        });
    }
}

impl PluginProxy {
    /// Listens on `socket` and forwards to `upstream`.
    pub fn start(socket: &Path, upstream: &Path) -> Self {
        let _ = std::fs::remove_file(socket);
        let l = UnixListener::bind(socket).expect("bind proxy socket");
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let (c, up) = (calls.clone(), upstream.to_path_buf());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                let (c, up) = (c.clone(), up.clone());
                std::thread::spawn(move || serve(s, &up, &c));
            }
        });
        PluginProxy {
            calls,
            socket: socket.to_path_buf(),
        }
    }
}

impl Drop for PluginProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}
