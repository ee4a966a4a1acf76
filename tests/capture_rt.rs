//! The capture callback's hand-off is real-time safe: `RingProducer::push`, which cpal's capture
//! callback calls once per period, neither allocates nor frees memory (a counting global
//! allocator watches the calling thread), whether the ring has room or is full, and the ring
//! never grows. It takes no lock either: ringbuf's shared ring and the counters are atomics.
#![cfg(feature = "capture")]
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use onair::push::capture::{ring, InputStats};

struct Counting;

static CALLS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if WATCHED.with(Cell::get) {
        CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count();
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn the_callback_hand_off_never_allocates_frees_or_grows() {
    let stats = Arc::new(InputStats::default());
    // 100 ms at 48 kHz stereo, fed 10 ms periods in every format a device may deliver.
    let (mut producer, mut consumer) = ring(4_800, 2, stats.clone());
    let capacity = producer.capacity();
    let period_i16: Vec<i16> = (0..960).map(|i| (i * 37 % 20_000) as i16).collect();
    let period_i32: Vec<i32> = period_i16.iter().map(|&s| i32::from(s) << 16).collect();
    let period_f32: Vec<f32> = period_i16.iter().map(|&s| f32::from(s) / 32768.0).collect();
    let mut drained = Vec::with_capacity(capacity.get());

    WATCHED.with(|w| w.set(true));
    for round in 0..100 {
        producer.push(&period_i16);
        producer.push(&period_i32);
        producer.push(&period_f32);
        // Let the consumer drain now and then: the ring goes from empty to full and overflows.
        if round % 7 == 0 {
            WATCHED.with(|w| w.set(false));
            drained.clear();
            consumer.pop_frames(usize::MAX, &mut drained);
            WATCHED.with(|w| w.set(true));
        }
    }
    WATCHED.with(|w| w.set(false));

    assert_eq!(CALLS.load(Ordering::Relaxed), 0, "the hand-off allocated or freed");
    assert_eq!(producer.capacity(), capacity, "the ring never grows");
    assert!(consumer.frames_available() <= 4_800);
    let snap = stats.snapshot();
    assert!(snap.overruns > 0 && snap.overrun_frames > 0, "a full ring drops and counts: {snap:?}");
    assert_eq!(snap.frames + snap.overrun_frames, 300 * 480, "every frame is kept or counted");
}
