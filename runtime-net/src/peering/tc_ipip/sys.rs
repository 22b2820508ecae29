//! The `bpf(2)` calls the in-kernel IPIP data plane makes: load a tc program, attach it to a
//! device's ingress or egress with a tcx link, swap the program of a link, and (for tests) run
//! a program on one packet.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::asm::Insn;

const CMD_PROG_LOAD: libc::c_long = 5;
const CMD_PROG_TEST_RUN: libc::c_long = 10;
const CMD_LINK_CREATE: libc::c_long = 28;
const CMD_LINK_UPDATE: libc::c_long = 29;
const PROG_TYPE_SCHED_CLS: u32 = 3;
const ATTACH_TCX_INGRESS: u32 = 46;
const ATTACH_TCX_EGRESS: u32 = 47;
/// Licence the programs are loaded under (they call helpers only GPL-compatible code may).
const LICENSE: &[u8] = b"Dual MIT/GPL\0";

/// A `bpf(2)` call failed.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The verifier (or the kernel) refused the program.
    #[error("load eBPF program {name}: {source}{}", log_tail(.log))]
    Load {
        /// Program name.
        name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
        /// The verifier's log (empty when it wrote none).
        log: String,
    },
    /// Another call failed.
    #[error("{op}: {source}")]
    Call {
        /// What was done.
        op: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "; verifier: {}",
        lines[lines.len().saturating_sub(3)..].join(" | ")
    )
}

/// Where on a device a program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Packets received by the device.
    Ingress,
    /// Packets sent by the device.
    Egress,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a `repr(C)` prefix of `union bpf_attr` for `cmd`, of the size passed;
    // the pointers inside it point at live buffers of the sizes given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: a file descriptor the kernel just returned, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Loads `insns` as a tc program named `name` (at most 15 bytes are kept). When the verifier
/// refuses it, loads it once more with the verifier's log on, for the error.
pub fn prog_load(name: &str, insns: &[Insn]) -> Result<OwnedFd, BpfError> {
    let code: Vec<[u8; 8]> = insns.iter().map(|i| i.to_bytes()).collect();
    let mut attr = ProgLoad {
        prog_type: PROG_TYPE_SCHED_CLS,
        insn_cnt: code.len() as u32,
        insns: code.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        ..ProgLoad::default()
    };
    for (d, s) in attr.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    match bpf(CMD_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(source) => {
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            if let Ok(fd) = bpf(CMD_PROG_LOAD, &mut attr) {
                return Ok(owned(fd));
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(BpfError::Load {
                name: name.to_string(),
                source,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

/// Attaches `prog` to the `hook` of interface `ifindex` with a tcx link, after any programs
/// already there. The program stays attached while the returned link is open (or until the
/// device goes away).
pub fn tcx_attach(prog: &OwnedFd, ifindex: u32, hook: Hook) -> Result<OwnedFd, BpfError> {
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: match hook {
            Hook::Ingress => ATTACH_TCX_INGRESS,
            Hook::Egress => ATTACH_TCX_EGRESS,
        },
        ..LinkCreate::default()
    };
    bpf(CMD_LINK_CREATE, &mut attr)
        .map(owned)
        .map_err(|source| BpfError::Call {
            op: "attach eBPF program (tcx link)",
            source,
        })
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdate {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Replaces the program of `link` with `prog` in one step: every packet runs either the old
/// program or the new one.
pub fn link_update(link: &OwnedFd, prog: &OwnedFd) -> Result<(), BpfError> {
    let mut attr = LinkUpdate {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        ..LinkUpdate::default()
    };
    bpf(CMD_LINK_UPDATE, &mut attr)
        .map(|_| ())
        .map_err(|source| BpfError::Call {
            op: "replace eBPF program of a tcx link",
            source,
        })
}

#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

/// Runs `prog` once on the Ethernet frame `frame` (the kernel builds a packet of it as if
/// received on loopback) and returns the program's verdict and the frame as it left it.
pub fn test_run(prog: &OwnedFd, frame: &[u8]) -> Result<(i32, Vec<u8>), BpfError> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRun {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRun::default()
    };
    bpf(CMD_PROG_TEST_RUN, &mut attr).map_err(|source| BpfError::Call {
        op: "test-run eBPF program",
        source,
    })?;
    out.truncate(attr.data_size_out as usize);
    Ok((attr.retval as i32, out))
}

const CMD_MAP_CREATE: libc::c_long = 0;
const CMD_MAP_LOOKUP_ELEM: libc::c_long = 1;
const CMD_MAP_UPDATE_ELEM: libc::c_long = 2;
const CMD_MAP_DELETE_ELEM: libc::c_long = 3;
const MAP_TYPE_HASH: u32 = 1;
const MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// Entries are allocated as they are added, not all up front.
const MAP_NO_PREALLOC: u32 = 1;

#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// Creates a per-CPU array of `entries` 64-bit counters (all zero).
pub fn counter_map(entries: u32) -> Result<OwnedFd, BpfError> {
    let mut attr = MapCreate {
        map_type: MAP_TYPE_PERCPU_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: entries,
        ..MapCreate::default()
    };
    bpf(CMD_MAP_CREATE, &mut attr)
        .map(owned)
        .map_err(|source| BpfError::Call {
            op: "create eBPF counter map",
            source,
        })
}

/// Creates a hash map of at most `entries` entries, `K` bytes of key to `V` bytes of value
/// (memory is taken per entry added).
pub fn hash_map<const K: u32, const V: u32>(entries: u32) -> Result<OwnedFd, BpfError> {
    let mut attr = MapCreate {
        map_type: MAP_TYPE_HASH,
        key_size: K,
        value_size: V,
        max_entries: entries,
        map_flags: MAP_NO_PREALLOC,
    };
    bpf(CMD_MAP_CREATE, &mut attr)
        .map(owned)
        .map_err(|source| BpfError::Call {
            op: "create eBPF hash map",
            source,
        })
}

/// Sets `key` to `value` in `map` (sizes as the map was made with).
pub fn map_set(map: &OwnedFd, key: &[u8], value: &[u8]) -> Result<(), BpfError> {
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..MapElem::default()
    };
    bpf(CMD_MAP_UPDATE_ELEM, &mut attr)
        .map(drop)
        .map_err(|source| BpfError::Call {
            op: "set an eBPF map entry",
            source,
        })
}

/// Removes `key` from `map`; absent already is fine.
pub fn map_remove(map: &OwnedFd, key: &[u8]) -> Result<(), BpfError> {
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        ..MapElem::default()
    };
    match bpf(CMD_MAP_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(source) => Err(BpfError::Call {
            op: "remove an eBPF map entry",
            source,
        }),
    }
}

#[repr(C)]
#[derive(Default)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// CPUs the kernel may ever run (a per-CPU map holds a value for each).
pub fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim()
                .split(',')
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?),
                    None => r.parse::<usize>().ok().map(|_| 1),
                })
                .sum::<Option<usize>>()
        })
        .unwrap_or(1)
}

/// The sum over the `cpus` CPUs ([`possible_cpus`]) of entry `key` of the counter map `map`.
pub fn counter_sum(map: &OwnedFd, key: u32, cpus: usize) -> Result<u64, BpfError> {
    let mut values = vec![0u64; cpus];
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: values.as_mut_ptr() as u64,
        ..MapElem::default()
    };
    bpf(CMD_MAP_LOOKUP_ELEM, &mut attr).map_err(|source| BpfError::Call {
        op: "read eBPF counter map",
        source,
    })?;
    Ok(values.iter().sum())
}
