//! The only unsafe code of the firewall: a minimal binding of libnftables (the library `nft`
//! itself is built on), wrapped in a safe, mutex-guarded [`NftContext`].
//!
//! The netlink socket of a context is opened in the network namespace of the thread that creates
//! it; every later command acts on that namespace.

use std::ffi::{c_char, c_int, c_uint, CStr, CString};
use std::ptr::NonNull;
use std::sync::Mutex;

/// Opaque `struct nft_ctx`.
#[repr(C)]
struct RawCtx {
    _private: [u8; 0],
}

const NFT_CTX_DEFAULT: u32 = 0;
/// `NFT_CTX_OUTPUT_JSON` from `nftables/libnftables.h`.
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;

#[link(name = "nftables")]
extern "C" {
    fn nft_ctx_new(flags: u32) -> *mut RawCtx;
    fn nft_ctx_free(ctx: *mut RawCtx);
    fn nft_ctx_buffer_output(ctx: *mut RawCtx) -> c_int;
    fn nft_ctx_buffer_error(ctx: *mut RawCtx) -> c_int;
    fn nft_ctx_get_output_buffer(ctx: *mut RawCtx) -> *const c_char;
    fn nft_ctx_get_error_buffer(ctx: *mut RawCtx) -> *const c_char;
    fn nft_ctx_output_set_flags(ctx: *mut RawCtx, flags: c_uint);
    fn nft_run_cmd_from_buffer(ctx: *mut RawCtx, buf: *const c_char) -> c_int;
}

/// Owner of one `nft_ctx`; only reachable through the mutex in [`NftContext`].
struct Ctx(NonNull<RawCtx>);

// SAFETY: an nft_ctx has no thread affinity; it only must not be used by two threads at once,
// which the Mutex in NftContext guarantees (Ctx is never handed out outside the lock).
unsafe impl Send for Ctx {}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the pointer came from nft_ctx_new, is non-null and is freed exactly once here.
        unsafe { nft_ctx_free(self.0.as_ptr()) }
    }
}

/// Output of a successful command.
pub type Output = String;

/// A libnftables context, safe to share between threads.
pub struct NftContext {
    inner: Mutex<Ctx>,
}

impl NftContext {
    /// Creates a context with buffered output and errors, bound to the calling thread's network
    /// namespace.
    pub fn new() -> Result<Self, String> {
        // SAFETY: plain constructor call with a documented flag value.
        let raw = unsafe { nft_ctx_new(NFT_CTX_DEFAULT) };
        let ptr = NonNull::new(raw).ok_or_else(|| "nft_ctx_new returned NULL".to_string())?;
        let ctx = Ctx(ptr);
        // SAFETY: ctx.0 is a live context owned by us.
        let (o, e) = unsafe {
            (
                nft_ctx_buffer_output(ctx.0.as_ptr()),
                nft_ctx_buffer_error(ctx.0.as_ptr()),
            )
        };
        if o != 0 || e != 0 {
            return Err("cannot buffer libnftables output".to_string());
        }
        Ok(Self {
            inner: Mutex::new(ctx),
        })
    }

    /// Runs `cmds` (one or more newline-separated nft commands) as one batch, i.e. one atomic
    /// netlink transaction. With `json`, listings come back as JSON. Returns the output buffer,
    /// or the error buffer on failure.
    pub fn run(&self, cmds: &str, json: bool) -> Result<Output, String> {
        let c = CString::new(cmds).map_err(|_| "command text contains a NUL byte".to_string())?;
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let ctx = guard.0.as_ptr();
        let flags = if json { NFT_CTX_OUTPUT_JSON } else { 0 };
        // SAFETY: ctx is live and exclusively ours while the guard is held; `c` is a valid
        // NUL-terminated string that outlives the call. The returned buffers are owned by the
        // context and valid until the next call on it, so they are copied before the guard drops.
        unsafe {
            nft_ctx_output_set_flags(ctx, flags);
            let rc = nft_run_cmd_from_buffer(ctx, c.as_ptr());
            let out = cstr_lossy(nft_ctx_get_output_buffer(ctx));
            let err = cstr_lossy(nft_ctx_get_error_buffer(ctx));
            if rc == 0 {
                Ok(out)
            } else if err.trim().is_empty() {
                Err(format!("nft failed with code {rc}"))
            } else {
                Err(err.trim_end().to_string())
            }
        }
    }
}

/// Copies a possibly-NULL C string.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string valid for the duration of the call.
unsafe fn cstr_lossy(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
