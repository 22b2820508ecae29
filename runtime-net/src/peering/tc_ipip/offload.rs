//! Turning a device's GRO or TSO on and off (the legacy `SIOCETHTOOL` requests `ethtool -K`
//! also understands), for the veth pair that re-joins decapsulated packets.

use std::os::fd::AsRawFd;

const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_SGRO: u32 = 0x2c;

/// An offload of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// Generic receive offload: the device joins consecutive TCP segments of a flow.
    Gro,
    /// TCP segmentation offload: the device takes TCP super-packets to send.
    Tso,
}

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Turns `offload` of device `name` (in this network namespace) on or off.
pub fn set(name: &str, offload: Offload, on: bool) -> std::io::Result<()> {
    let mut value = EthtoolValue {
        cmd: match offload {
            Offload::Gro => ETHTOOL_SGRO,
            Offload::Tso => ETHTOOL_STSO,
        },
        data: u32::from(on),
    };
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= req.ifr_name.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("interface name {name:?} must be 1 to 15 bytes"),
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at a live ethtool_value.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
