//! A persistent, multi-queue layer-3 TUN device (no packet-info header) opened through
//! `/dev/net/tun`. Persistent so that its routes survive a daemon restart; the next daemon
//! re-attaches by name. Each queue is its own file descriptor: the kernel spreads the flows it
//! routes into the device over the queues by flow hash, so one reader per queue keeps every
//! flow in order.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

/// Offloads asked for first: partial checksums, TCP (IPv4, IPv6, ECN) and UDP segmentation.
const OFFLOADS: libc::c_uint = libc::TUN_F_CSUM
    | libc::TUN_F_TSO4
    | libc::TUN_F_TSO6
    | libc::TUN_F_TSO_ECN
    | libc::TUN_F_USO4
    | libc::TUN_F_USO6;
/// Offloads of kernels before 6.2, which have no UDP segmentation offload.
const OFFLOADS_NO_USO: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;

/// Opens (creating if needed) the persistent TUN device `name` with `queues` queues (at least
/// one), a virtio header in front of every packet and segmentation / checksum offloads towards
/// the reader (the kernel hands over 64 KiB super-packets; see `gso`). A device left by an
/// older version without multi-queue support is deleted and made anew (its routes go with it
/// and are put back by the next reconcile pass).
pub fn open(name: &str, queues: usize) -> io::Result<Vec<File>> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TUN name {name:?} must be 1 to 15 bytes"),
        ));
    }
    let first = match attach(name, true) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // A single-queue device of that name: make it non-persistent and close it, which
            // deletes it, then create the multi-queue one.
            let old = attach(name, false)?;
            ioctl_int(&old, libc::TUNSETPERSIST, 0)?;
            drop(old);
            attach(name, true)?
        }
        Err(e) => return Err(e),
    };
    ioctl_int(&first, libc::TUNSETPERSIST, 1)?;
    if let Err(e) = ioctl_int(&first, libc::TUNSETOFFLOAD, OFFLOADS) {
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
        ioctl_int(&first, libc::TUNSETOFFLOAD, OFFLOADS_NO_USO)?;
    }
    let mut out = vec![first];
    for _ in 1..queues.max(1) {
        out.push(attach(name, true)?);
    }
    Ok(out)
}

/// One `TUNSETIFF` on a fresh descriptor: creates the device or attaches one more queue.
fn attach(name: &str, multi_queue: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let mq = if multi_queue {
        libc::IFF_MULTI_QUEUE
    } else {
        0
    };
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR | mq) as libc::c_short;
    // SAFETY: the fd is open for the duration of the call and `req` is a valid ifreq that the
    // kernel reads and writes in place.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// An ioctl of the TUN that takes an integer argument by value.
fn ioctl_int(f: &File, req: libc::Ioctl, v: libc::c_uint) -> io::Result<()> {
    // SAFETY: `req` is one of TUNSETPERSIST / TUNSETOFFLOAD, which take an integer by value.
    if unsafe { libc::ioctl(f.as_raw_fd(), req, libc::c_ulong::from(v)) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
