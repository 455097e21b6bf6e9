//! glibc malloc settings for tensor-sized allocations.
//!
//! burn's CPU backend allocates and frees a fresh buffer for nearly every op. glibc serves
//! blocks above its (adaptive, 128 KiB to start) mmap threshold with fresh mappings and returns
//! freed heap tops to the kernel, so each step pays page faults and the kernel zeroing those
//! pages again: ~15% of a MiniLM training step on 2 cores (`perf record` on
//! `cargo bench --bench slm_throughput`). Keeping freed memory in the heap removes that cost for
//! about 4% more peak memory.

/// The ceiling glibc's adaptive threshold grows to on 64-bit (`DEFAULT_MMAP_THRESHOLD_MAX`);
/// larger blocks (the word-embedding gradient) measured no faster kept in the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Freed memory kept at the heap top before trimming, and the extra asked for on each growth.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const KEEP: libc::c_int = 256 << 20;

/// glibc's environment variables for the same settings; when one is set, the user's win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const USER_VARIABLES: [&str; 3] = [
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
];

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn user_set() -> bool {
    USER_VARIABLES
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

/// Applies the settings, unless the user set glibc's own `MALLOC_*_` variables for them.
/// Returns whether they were applied (false off glibc, where this does nothing).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if user_set() {
            return false;
        }
        // SAFETY: mallopt only changes allocator parameters under glibc's arena lock, and
        // returns 0 for a value it refuses.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP) == 1
                && libc::mallopt(libc::M_TOP_PAD, KEEP) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_settings() {
        // mallopt answers 0 for a value it refuses, so this checks all three constants.
        assert_eq!(keep_freed_memory(), !user_set());
    }
}
