//! The subscriptions: raw netlink sockets on the kernel's rtnetlink groups (links, IPv4/IPv6
//! addresses and routes, neighbours and fdb entries) and on nftables' notification group, in the
//! namespace of the thread that opens them (kernel side).
//!
//! Plain sockets rather than a request connection: a notification dropped because the receive
//! buffer was full surfaces as `ENOBUFS` on the next read, reported as [`Note::Lost`].

use std::io;

use rtnetlink::packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols, Socket, SocketAddr};
use tokio::io::unix::AsyncFd;

use super::nft;

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
/// Receive buffer asked for (the kernel doubles it): room for a burst of several thousand
/// notifications.
const RCVBUF: usize = 16 << 20;

/// `SO_RCVBUFFORCE` (needs CAP_NET_ADMIN).
fn force_rcvbuf(s: &Socket, bytes: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket descriptor, a pointer to a c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One thing the kernel told.
#[derive(Debug, Clone)]
pub enum Note {
    /// An rtnetlink notification.
    Route(RouteNetlinkMessage),
    /// An nftables notification.
    Nft(nft::Message),
    /// Notifications were dropped (`ENOBUFS`): everything must be checked.
    Lost,
}

/// Both subscriptions.
pub struct Listener {
    route: AsyncFd<Socket>,
    nft: AsyncFd<Socket>,
    buf: Vec<u8>,
}

fn open(protocol: isize, groups: &[u32]) -> io::Result<AsyncFd<Socket>> {
    let mut s = Socket::new(protocol)?;
    s.bind(&SocketAddr::new(0, 0))?;
    for g in groups {
        s.add_membership(*g)?;
    }
    // Larger than the default: with CAP_NET_ADMIN past rmem_max (SO_RCVBUFFORCE), otherwise as
    // far as rmem_max allows; ENOBUFS covers the rest. Deleting a bridge with 1,000 ports is
    // several thousand notifications (each port, its fdb entries) sent at once.
    if force_rcvbuf(&s, RCVBUF).is_err() {
        let _ = s.set_rx_buf_sz(RCVBUF);
    }
    s.set_non_blocking(true)?;
    // SAFETY: the socket owns its descriptor and nothing closes or replaces it while the
    // AsyncFd holds it.
    Ok(unsafe { AsyncFd::register(s)? })
}

impl Listener {
    /// Subscribes in the current thread's network namespace (needs a tokio runtime).
    pub fn subscribe() -> io::Result<Self> {
        let route = open(
            protocols::NETLINK_ROUTE,
            &[
                RTNLGRP_LINK,
                RTNLGRP_NEIGH,
                RTNLGRP_IPV4_IFADDR,
                RTNLGRP_IPV4_ROUTE,
                RTNLGRP_IPV6_IFADDR,
                RTNLGRP_IPV6_ROUTE,
            ],
        )?;
        let nft = open(protocols::NETLINK_NETFILTER, &[nft::NFNLGRP_NFTABLES])?;
        Ok(Listener {
            route,
            nft,
            buf: vec![0; 1 << 16],
        })
    }

    /// Waits for notifications and returns every one available now (at least one).
    pub async fn next(&mut self, out: &mut Vec<Note>) -> io::Result<()> {
        loop {
            tokio::select! {
                g = self.route.readable() => {
                    let mut g = g?;
                    match g.try_io(|s| drain(s.get_ref(), &mut self.buf, out, route_notes)) {
                        Ok(r) => r?,
                        Err(_would_block) => continue,
                    }
                }
                g = self.nft.readable() => {
                    let mut g = g?;
                    match g.try_io(|s| drain(s.get_ref(), &mut self.buf, out, nft_notes)) {
                        Ok(r) => r?,
                        Err(_would_block) => continue,
                    }
                }
            }
            if !out.is_empty() {
                return Ok(());
            }
        }
    }
}

/// Reads datagrams until the socket would block; `ENOBUFS` becomes [`Note::Lost`].
fn drain(
    s: &Socket,
    buf: &mut Vec<u8>,
    out: &mut Vec<Note>,
    decode: fn(&[u8], &mut Vec<Note>),
) -> io::Result<()> {
    let mut read_any = false;
    loop {
        buf.clear();
        match s.recv(buf, 0) {
            Ok(0) => break,
            Ok(_) => {
                read_any = true;
                decode(buf, out);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                read_any = true;
                out.push(Note::Lost);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && read_any => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn route_notes(datagram: &[u8], out: &mut Vec<Note>) {
    let mut at = 0;
    while at < datagram.len() {
        let Ok(b) = NetlinkBuffer::new_checked(&datagram[at..]) else {
            break;
        };
        let len = b.length() as usize;
        let end = (at + len).min(datagram.len());
        if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[at..end]) {
            if let NetlinkPayload::InnerMessage(m) = m.payload {
                out.push(Note::Route(m));
            }
        }
        at += (len.max(16) + 3) & !3;
    }
}

fn nft_notes(datagram: &[u8], out: &mut Vec<Note>) {
    out.extend(nft::parse(datagram).into_iter().map(Note::Nft));
}
