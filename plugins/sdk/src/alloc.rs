//! The allocator of a plugin component: a bump allocator that never frees.
//!
//! The host runs every call in a fresh instance and throws it away afterwards (the
//! contract's guarantees in docs/plugin-authoring.md), so memory a call frees would never
//! be reused anyway. Freeing was a fifth of a typical storage step's time (dlmalloc's
//! bookkeeping); bumping a pointer costs almost nothing. A call's memory is still bounded
//! by the host's `memoryBytes` limit: a plugin that allocates without end fails alone, as
//! before.
//!
//! Only in components (`target_family = "wasm"`); natively the system allocator stays.
//! A plugin that must reuse memory within one call (a long loop building and dropping
//! large buffers) can opt out with the SDK feature `system-allocator`.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::Cell;

const PAGE: usize = 64 << 10;
/// Memory is taken from the host this much at a time, at least: fewer `memory.grow` calls.
const CHUNK_PAGES: usize = 16;

/// The free range `[next, end)` of the region this allocator grew last.
pub struct Bump {
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: a component instance runs one thread; nothing shares the allocator.
unsafe impl Sync for Bump {}

impl Bump {
    pub const fn new() -> Self {
        Self {
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }

    /// Grows linear memory for at least `size` bytes aligned to `align`, continuing the
    /// current region when nothing else (wasi-libc's own `sbrk`) grew memory in between.
    fn grow(&self, size: usize, align: usize) -> Option<usize> {
        let pages = size.div_ceil(PAGE).saturating_add(1).max(CHUNK_PAGES);
        let previous = wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return None;
        }
        let base = previous.checked_mul(PAGE)?;
        let end = previous.checked_add(pages)?.checked_mul(PAGE)?;
        if base != self.end.get() {
            self.next.set(base);
        }
        self.end.set(end);
        let start = self.next.get().checked_next_multiple_of(align)?;
        (start.checked_add(size)? <= end).then_some(start)
    }
}

impl Default for Bump {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every block returned lies in linear memory this allocator grew, is aligned as
// asked and is never handed out twice; `dealloc` does nothing, so no block is reused.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let start = match self.next.get().checked_next_multiple_of(align) {
            Some(start) if start.checked_add(size).is_some_and(|e| e <= self.end.get()) => start,
            _ => match self.grow(size, align) {
                Some(start) => start,
                None => return core::ptr::null_mut(),
            },
        };
        self.next.set(start + size);
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize;
        // The last block grows in place when the region has room: a growing Vec or String
        // (JSON being written) does not copy itself over and over.
        if start + layout.size() == self.next.get()
            && start
                .checked_add(new_size)
                .is_some_and(|e| e <= self.end.get())
        {
            self.next.set(start + new_size);
            return ptr;
        }
        // SAFETY: the layout is valid (same alignment, size checked by the caller).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for `alloc`; the old block stays valid to copy from.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and do not overlap.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}
