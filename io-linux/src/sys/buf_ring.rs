//! An io_uring provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19).
//!
//! A receive submitted with `IOSQE_BUFFER_SELECT` names a buffer *group* instead of a buffer;
//! the kernel takes a buffer from this ring only when data arrives. That is what makes an
//! idle connection cost no receive memory: ten thousand parked receives hold zero buffers.
//! The completion says which buffer (`bid`) was filled; the driver lends the bytes to the
//! caller for the duration of a callback and then puts the buffer back at the ring's tail.
//!
//! Memory: `entries` ring slots of 16 bytes (page-aligned, as the kernel requires) and
//! `entries * buf_size` bytes of buffers, both owned here and handed to the kernel until
//! the ring is unregistered.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// The ring's kernel-required alignment (a page).
const RING_ALIGN: usize = 4096;

pub(crate) struct BufRing {
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    bufs: NonNull<u8>,
    bufs_layout: Layout,
    entries: u16,
    buf_size: usize,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
    group: u16,
    registered: bool,
}

impl BufRing {
    /// Allocates `entries` buffers of `buf_size` bytes and registers them as `group`.
    /// `entries` must be a power of two (the kernel's rule).
    pub(crate) fn new(
        submitter: &Submitter<'_>,
        entries: u16,
        buf_size: usize,
        group: u16,
    ) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || buf_size == 0 || buf_size > u32::MAX as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad buffer ring geometry"));
        }
        let ring_layout = Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<BufRingEntry>(),
            RING_ALIGN,
        )
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ring too large"))?;
        let bufs_layout = Layout::from_size_align(usize::from(entries) * buf_size, 64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffers too large"))?;
        // SAFETY: both layouts have non-zero size (entries and buf_size are non-zero).
        let ring = NonNull::new(unsafe { alloc::alloc_zeroed(ring_layout) }.cast::<BufRingEntry>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: as above.
        let bufs = match NonNull::new(unsafe { alloc::alloc(bufs_layout) }) {
            Some(p) => p,
            None => {
                // SAFETY: allocated just above with this layout, never shared.
                unsafe { alloc::dealloc(ring.as_ptr().cast(), ring_layout) };
                return Err(io::ErrorKind::OutOfMemory.into());
            }
        };
        let mut this = BufRing {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            buf_size,
            tail: 0,
            group,
            registered: false,
        };
        // SAFETY: the ring memory is page-aligned, sized for `entries`, zeroed, and stays
        // allocated until `unregister` succeeds (Drop leaks it otherwise).
        unsafe {
            submitter.register_buf_ring_with_flags(ring.as_ptr() as u64, entries, group, 0)?;
        }
        this.registered = true;
        for bid in 0..entries {
            this.recycle(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The buffer group id to name in receives.
    pub(crate) fn group(&self) -> u16 {
        self.group
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed back to us.
    pub(crate) fn filled(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.entries && len <= self.buf_size, "kernel returned a bad buffer id");
        // SAFETY: `bid` names a buffer inside the allocation (checked above) that the kernel
        // has finished writing (its completion arrived) and that is not in the ring until
        // `recycle`, so nothing writes it while this borrow lives (`recycle` takes `&mut`).
        unsafe {
            std::slice::from_raw_parts(
                self.bufs.as_ptr().add(usize::from(bid) * self.buf_size),
                len,
            )
        }
    }

    /// Puts buffer `bid` back at the tail. The kernel sees it after [`publish`](Self::publish).
    pub(crate) fn recycle(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let slot = usize::from(self.tail & mask);
        // SAFETY: `slot` < entries, so the entry lies inside the ring allocation; the kernel
        // only reads entries between its head and the published tail, and this one is past
        // the published tail until `publish`.
        let entry = unsafe { &mut *self.ring.as_ptr().add(slot) };
        // SAFETY: `bid` < entries, so the address stays inside the buffer allocation.
        let addr = unsafe { self.bufs.as_ptr().add(usize::from(bid) * self.buf_size) };
        entry.set_addr(addr as u64);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes recycled buffers visible to the kernel.
    pub(crate) fn publish(&self) {
        // SAFETY: the ring base is the address of its first entry, properly initialised
        // (zeroed), so `tail` points at the shared tail field; the kernel reads it atomically
        // and the release store orders our entry writes before it.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Unregisters the ring; after this the kernel holds no pointer into our memory.
    pub(crate) fn unregister(&mut self, submitter: &Submitter<'_>) {
        if self.registered && submitter.unregister_buf_ring(self.group).is_ok() {
            self.registered = false;
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // The kernel may still write into these buffers; leaking is the only sound choice.
            return;
        }
        // SAFETY: both were allocated in `new` with these layouts and the kernel no longer
        // references them (unregistered).
        unsafe {
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            alloc::dealloc(self.bufs.as_ptr(), self.bufs_layout);
        }
    }
}
