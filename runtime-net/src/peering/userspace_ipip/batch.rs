//! Batched socket I/O for the userspace IPIP data plane: `recvmmsg` and `sendmmsg` over a raw
//! socket, so one system call moves up to [`BATCH`] packets.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

/// Packets per system call.
pub const BATCH: usize = 32;
/// Room for one packet (largest IPv4 packet).
pub const SLOT: usize = 65536;

/// Receive buffers for [`recv`]: `BATCH` slots of `SLOT` bytes.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    lens: [usize; BATCH],
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: (0..BATCH).map(|_| vec![0u8; SLOT]).collect(),
            lens: [0; BATCH],
        }
    }
}

impl RecvBatch {
    /// Blocks until at least one packet arrives on `fd`, then takes all that are queued (up to
    /// [`BATCH`]); returns how many.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iov: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain old data; all-zero is valid (no name, no control).
        let mut msgs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every msg_hdr points at one iovec that points at a live buffer of iov_len
        // bytes; the vectors outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (l, m) in self.lens.iter_mut().zip(&msgs).take(n) {
            *l = m.msg_len as usize;
        }
        Ok(n)
    }

    /// Packet `i` of the last [`RecvBatch::recv`].
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i]]
    }

    /// Packet `i` of the last [`RecvBatch::recv`], writable.
    pub fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        let l = self.lens[i];
        &mut self.bufs[i][..l]
    }
}

/// Packets queued for [`SendBatch::flush`], each with its destination.
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    lens: [usize; BATCH],
    dst: [Ipv4Addr; BATCH],
    n: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            bufs: (0..BATCH).map(|_| vec![0u8; SLOT]).collect(),
            lens: [0; BATCH],
            dst: [Ipv4Addr::UNSPECIFIED; BATCH],
            n: 0,
        }
    }
}

impl SendBatch {
    /// Queues a copy of `pkt` for `dst`; `false` (nothing queued) when the batch is full or
    /// the packet too large.
    pub fn push(&mut self, pkt: &[u8], dst: Ipv4Addr) -> bool {
        if self.n == BATCH || pkt.len() > SLOT {
            return false;
        }
        self.bufs[self.n][..pkt.len()].copy_from_slice(pkt);
        self.lens[self.n] = pkt.len();
        self.dst[self.n] = dst;
        self.n += 1;
        true
    }

    /// Whether the batch is full.
    pub fn is_full(&self) -> bool {
        self.n == BATCH
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Sends every queued packet (one `sendmmsg`, repeated if the kernel takes fewer); returns
    /// how many were sent and empties the queue. A packet the kernel refuses is skipped.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let mut addrs: Vec<libc::sockaddr_in> = self.dst[..self.n]
            .iter()
            .map(|a| libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a).to_be(),
                },
                sin_zero: [0; 8],
            })
            .collect();
        let mut iov: Vec<libc::iovec> = self.bufs[..self.n]
            .iter_mut()
            .zip(&self.lens)
            .map(|(b, l)| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: *l,
            })
            .collect();
        // SAFETY: see RecvBatch::recv.
        let mut msgs: Vec<libc::mmsghdr> =
            (0..self.n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for ((m, v), a) in msgs.iter_mut().zip(iov.iter_mut()).zip(addrs.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = (a as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        let mut done = 0;
        let mut sent = 0;
        while done < self.n {
            // SAFETY: msgs[done..] point at live iovecs, buffers and addresses.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[done..].as_mut_ptr(),
                    (self.n - done) as libc::c_uint,
                    0,
                )
            };
            if r <= 0 {
                if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first packet was refused (e.g. EMSGSIZE): skip it.
                done += 1;
            } else {
                done += r as usize;
                sent += r as usize;
            }
        }
        self.n = 0;
        sent
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use socket2::{Domain, Protocol, Socket, Type};

    use super::*;

    /// Needs root (raw sockets); traffic stays on loopback. IP protocol 253 is reserved for
    /// experiments (RFC 3692).
    #[test]
    fn a_batch_goes_out_in_one_call_and_comes_back_whole() {
        let proto = Some(Protocol::from(253));
        let (Ok(tx), Ok(rx)) = (
            Socket::new(Domain::IPV4, Type::RAW, proto),
            Socket::new(Domain::IPV4, Type::RAW, proto),
        ) else {
            eprintln!("SKIPPED: raw sockets need root");
            return;
        };
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let marker = format!("shimnet-batch-{}", std::process::id());
        let mut out = SendBatch::default();
        for i in 0..3u8 {
            let msg = format!("{marker}-{i}");
            assert!(out.push(msg.as_bytes(), Ipv4Addr::LOCALHOST));
        }
        assert!(!out.is_full());
        assert_eq!(out.len(), 3);
        assert_eq!(out.flush(tx.as_raw_fd()), 3);
        assert!(out.is_empty());
        let mut got = Vec::new();
        let mut inb = RecvBatch::default();
        while got.len() < 3 {
            let n = inb.recv(rx.as_raw_fd()).unwrap();
            for i in 0..n {
                // The raw socket returns the IPv4 header too.
                let p = inb.packet(i);
                let body = String::from_utf8_lossy(&p[usize::from(p[0] & 0x0f) * 4..]).to_string();
                if body.starts_with(&marker) {
                    got.push(body);
                }
            }
        }
        got.sort();
        assert_eq!(
            got,
            (0..3).map(|i| format!("{marker}-{i}")).collect::<Vec<_>>()
        );
    }
}
