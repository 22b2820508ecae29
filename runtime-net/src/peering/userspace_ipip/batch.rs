//! Batched socket I/O for the userspace IPIP data plane: `recvmmsg` and scatter-gather `sendmmsg`
//! over a raw socket, so one system call moves many packets.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

/// Packets per `recvmmsg`.
pub const BATCH: usize = 64;
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

/// Most messages one `sendmmsg` takes (`UIO_MAXIOV`).
const MAX_MSGS: usize = 1024;

/// Scatter-gather sending with `sendmmsg`: each packet is a header slice and a payload slice
/// (either may be empty), sent to its own destination. Keeps its system-call arrays between
/// calls so a steady stream allocates nothing.
#[derive(Default)]
pub struct Sender {
    iov: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    msgs: Vec<libc::mmsghdr>,
}

impl Sender {
    /// Sends every packet of `packets` (destination, header, payload) on `fd`, as few system
    /// calls as possible; returns (sent, refused). A packet the kernel refuses (e.g. too large
    /// for the path MTU with DF set) is skipped.
    pub fn send<'a>(
        &mut self,
        fd: RawFd,
        packets: impl IntoIterator<Item = (Ipv4Addr, &'a [u8], &'a [u8])>,
    ) -> (usize, usize) {
        self.iov.clear();
        self.addrs.clear();
        self.msgs.clear();
        for (dst, hdr, payload) in packets {
            self.addrs.push(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(dst).to_be(),
                },
                sin_zero: [0; 8],
            });
            // The kernel only reads through these pointers (sendmmsg).
            self.iov.push(libc::iovec {
                iov_base: hdr.as_ptr().cast_mut().cast(),
                iov_len: hdr.len(),
            });
            self.iov.push(libc::iovec {
                iov_base: payload.as_ptr().cast_mut().cast(),
                iov_len: payload.len(),
            });
        }
        let n = self.addrs.len();
        for i in 0..n {
            // SAFETY: mmsghdr is plain old data; all-zero is valid (no control data).
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut self.iov[2 * i];
            m.msg_hdr.msg_iovlen = 2;
            m.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            self.msgs.push(m);
        }
        let (mut done, mut sent) = (0, 0);
        while done < n {
            let chunk = (n - done).min(MAX_MSGS);
            // SAFETY: msgs[done..done + chunk] point at iovecs and addresses held by self, whose
            // vectors are not touched until the call returns; the iovecs point at the slices
            // borrowed for 'a, which outlive this function.
            let r = unsafe {
                libc::sendmmsg(fd, self.msgs[done..].as_mut_ptr(), chunk as libc::c_uint, 0)
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
        (sent, n - sent)
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
        let msgs: Vec<(String, String)> = (0..3)
            .map(|i| (format!("{marker}-"), i.to_string()))
            .collect();
        let mut out = Sender::default();
        let sent = out.send(
            tx.as_raw_fd(),
            msgs.iter()
                .map(|(h, p)| (Ipv4Addr::LOCALHOST, h.as_bytes(), p.as_bytes())),
        );
        assert_eq!(sent, (3, 0));
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
