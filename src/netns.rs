//! Named network namespaces (`/run/netns/<name>`, as `ip netns` makes them) and running code
//! inside a namespace on a dedicated thread. Used by `shimnetctl check` and the tests.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Folder of named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct NamedNetns {
    name: String,
    path: PathBuf,
}

impl NamedNetns {
    /// Creates a new empty namespace bound at `/run/netns/<name>`; fails if it exists.
    pub fn create(name: &str) -> io::Result<Self> {
        std::fs::create_dir_all(NETNS_DIR)?;
        make_dir_shared()?;
        let path = Path::new(NETNS_DIR).join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let target = path.clone();
        let made = std::thread::spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(io::Error::from)
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?;
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(NamedNetns {
            name: name.to_string(),
            path,
        })
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        run_in(&self.path, f)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so that namespaces bound
/// there later are visible in mount namespaces copied from this one (e.g. `ip netns exec`).
fn make_dir_shared() -> io::Result<()> {
    let flags = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, NETNS_DIR, None::<&str>, flags, None::<&str>).is_ok() {
        return Ok(());
    }
    // Not a mount point yet: bind it onto itself first.
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    match mount(Some(NETNS_DIR), NETNS_DIR, None::<&str>, bind, None::<&str>) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
        Err(e) => return Err(e.into()),
    }
    mount(None::<&str>, NETNS_DIR, None::<&str>, flags, None::<&str>).map_err(io::Error::from)
}

/// Runs `f` on a scoped thread that first enters the network namespace at `path`.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let file = File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
