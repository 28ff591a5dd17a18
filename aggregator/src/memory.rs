//! How the aggregator's allocator (mimalloc, set in `main.rs`) takes memory
//! from the OS and gives it back: in small pages, and never.
//!
//! A busy aggregator builds a batch of tens of thousands of events and
//! frees it at every flush, about once a second under load. mimalloc v3
//! returns free memory to the OS (`madvise`) once a purge delay (1 s by
//! default) has passed since it first scheduled a purge, and then all of
//! it, however recently freed: each flush faulted the last one's pages back
//! in, zeroed by the kernel (15 % of the drain's CPU samples were
//! `clear_page_erms`). A 10 s delay only spaced those purges out (0.98 ×
//! the CPU per event); never purging lets every flush reuse the pages of
//! the last (0.88 × on the 1M drain, `docs/benchmarks.md`). The process
//! keeps the memory of its largest batch, which `max_batch_events` bounds;
//! `MIMALLOC_PURGE_DELAY` (milliseconds) in the environment gives it back.
//!
//! mimalloc also asks the kernel for transparent huge pages on its arenas
//! (`madvise(MADV_HUGEPAGE)`), so the first touch anywhere in a 2 MiB region
//! has the kernel zero all of it. The aggregator's memory is many partly
//! filled regions (the country table, uap-core's compiled regexes, the
//! batch's maps and strings, librdkafka's queues): with huge pages the
//! dimension tables alone are 95 MB resident instead of 67 MB, and zeroing
//! them was four fifths of the main thread's CPU samples in the drain's
//! profile (`do_huge_pmd_anonymous_page`, `clear_page_erms`). Where the
//! host hands a virtual machine its memory lazily, zeroing a fresh page is
//! slow and every byte of it is paid: [`small_pages`] keeps the process on
//! 4 KiB pages, which on the 1M drain costs less CPU per event
//! (`docs/benchmarks.md`). `MIMALLOC_ALLOW_THP=1` in the environment keeps
//! huge pages, for an operator whose machines favour them.

use std::os::raw::c_long;

/// How long freed memory stays with the process before mimalloc returns it
/// (milliseconds; -1: never).
pub const PURGE_DELAY_MS: c_long = -1;

/// `mi_option_purge_delay`'s position in mimalloc's `mi_option_t` (v2 and
/// v3 alike; libmimalloc-sys names only the stable options). A test reads
/// its default back to notice an update that moves it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets [`PURGE_DELAY_MS`]; `MIMALLOC_PURGE_DELAY` in the environment still
/// wins, for an operator who wants otherwise.
pub fn hold_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one numeric option, which mimalloc reads when it next
    // purges. Called first thing in `main`, while the runtime's threads are
    // still idle (the setter takes no lock).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

/// Turns transparent huge pages off for the whole process, from now on
/// (`PR_SET_THP_DISABLE`: it also covers the arenas mimalloc advised before
/// `main`), unless `MIMALLOC_ALLOW_THP` is set in the environment: then
/// mimalloc's own reading of it decides (`0` turns them off as well).
pub fn small_pages() -> std::io::Result<()> {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return Ok(());
    }
    // SAFETY: sets one flag of this process's memory map; no pointers.
    match unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        // mimalloc v3's default purge delay is 1,000 ms (v2's, 10): another
        // value here means the enum moved and the setter would change
        // something else.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            assert_eq!(default, 1_000, "mi_option_t position {MI_OPTION_PURGE_DELAY} is not purge_delay");
        }
        hold_freed_memory();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, PURGE_DELAY_MS);
    }

    #[test]
    fn huge_pages_are_off_for_the_process() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return;
        }
        small_pages().expect("prctl(PR_SET_THP_DISABLE)");
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) }, 1);
    }
}
