//! When each listener of a driver is served: the pure part of the driver, with time passed in.
//!
//! A listener is in one place at a time: idle at the head of its stream (in its group's idle
//! list), pending until a send window ends (in a `Due` batch), ready to be served this turn
//! (the ready queue), or blocked until its socket takes more (no list: the socket's writable
//! event brings it back). List entries carry a ticket: moving a listener gives it a new one,
//! so entries it left behind in other lists are ignored when they come up.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// New frames this large go out at once even with a send window: one write of 16 KiB costs
/// less than twice a write of 300 bytes, so there is little left to save by waiting.
pub const WINDOW_FULL_BYTES: usize = 16 << 10;
/// A hold shorter than this is not worth a wake-up: the batch leaves a little early.
pub const MIN_HOLD: Duration = Duration::from_millis(1);

/// Where a listener is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Everything up to the head is written; waits for the stream to move.
    Idle,
    /// New frames are held until the send window ends.
    Pending,
    /// To be served on this turn of the loop.
    Ready,
    /// The socket took only part of a write; waits for it to be writable.
    Blocked,
    /// No listener in this slot.
    Gone,
}

/// A listener in a list: its slot and the ticket it was listed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    slot: u32,
    ticket: u32,
}

#[derive(Clone, Copy, Debug)]
struct Spot {
    place: Place,
    ticket: u32,
    group: u32,
}

/// Listeners that are due together (they were idle when the same frame arrived).
#[derive(Debug)]
struct Due {
    at: Instant,
    keys: Vec<Key>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    // Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

/// The lists of one driver. Slots and groups are small integers chosen by the driver.
#[derive(Debug, Default)]
pub struct Schedule {
    spots: Vec<Spot>,
    /// Idle listeners per group (the listeners of one stream with one send window).
    idle: Vec<Vec<Key>>,
    due: BinaryHeap<Due>,
    ready: VecDeque<Key>,
    next_ticket: u32,
}

impl Schedule {
    /// Where the listener in `slot` is.
    pub fn place(&self, slot: u32) -> Place {
        self.spots.get(slot as usize).map_or(Place::Gone, |s| s.place)
    }

    /// The group of the listener in `slot`.
    pub fn group(&self, slot: u32) -> u32 {
        self.spots.get(slot as usize).map_or(0, |s| s.group)
    }

    /// A new listener in `slot`, of `group`: ready to get what it is owed.
    pub fn add(&mut self, slot: u32, group: u32) {
        let at = slot as usize;
        if self.spots.len() <= at {
            self.spots.resize(at + 1, Spot { place: Place::Gone, ticket: 0, group: 0 });
        }
        self.spots[at].group = group;
        if self.idle.len() <= group as usize {
            self.idle.resize_with(group as usize + 1, Vec::new);
        }
        self.make_ready(slot);
    }

    /// The listener left; entries it left in lists are ignored from now on.
    pub fn remove(&mut self, slot: u32) {
        self.relist(slot, Place::Gone);
    }

    /// Moves a listener with a new ticket; entries it had in lists become stale.
    fn relist(&mut self, slot: u32, place: Place) -> Option<Key> {
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        let spot = self.spots.get_mut(slot as usize)?;
        spot.place = place;
        spot.ticket = ticket;
        Some(Key { slot, ticket })
    }

    fn valid(&self, key: Key) -> bool {
        self.spots
            .get(key.slot as usize)
            .is_some_and(|s| s.ticket == key.ticket && s.place != Place::Gone)
    }

    /// To be served on this turn, or the next one if this turn's ready list was taken.
    pub fn make_ready(&mut self, slot: u32) {
        if let Some(key) = self.relist(slot, Place::Ready) {
            self.ready.push_back(key);
        }
    }

    /// At the head of its stream: waits for the stream to move.
    pub fn make_idle(&mut self, slot: u32) {
        if let Some(key) = self.relist(slot, Place::Idle) {
            let group = self.spots[slot as usize].group as usize;
            self.idle[group].push(key);
        }
    }

    /// Its socket is full: waits for the writable event.
    pub fn block(&mut self, slot: u32) {
        self.relist(slot, Place::Blocked);
    }

    /// The stream of `group` has new entries: the first arrived at `first_at` (`None`: now)
    /// and they are `bytes` long. Its idle listeners are due when the first is `window` old,
    /// at once without a window, or when there is already enough to fill a write.
    pub fn head_moved(
        &mut self,
        group: u32,
        first_at: Option<Instant>,
        bytes: usize,
        window: Duration,
        now: Instant,
    ) {
        let Some(idle) = self.idle.get_mut(group as usize) else { return };
        if idle.is_empty() {
            return;
        }
        let mut keys = std::mem::take(idle);
        keys.retain(|&key| self.valid(key));
        let due = if window.is_zero() || bytes >= WINDOW_FULL_BYTES {
            now
        } else {
            first_at.unwrap_or(now) + window
        };
        if due <= now + MIN_HOLD {
            for key in keys {
                self.make_ready(key.slot);
            }
            return;
        }
        for key in &mut keys {
            if let Some(fresh) = self.relist(key.slot, Place::Pending) {
                *key = fresh;
            }
        }
        self.due.push(Due { at: due, keys });
    }

    /// Pending listeners whose window has ended by `now`; they are marked ready.
    pub fn take_due(&mut self, now: Instant, slots: &mut Vec<u32>) {
        while self.due.peek().is_some_and(|d| d.at <= now + MIN_HOLD) {
            let Some(due) = self.due.pop() else { break };
            for key in due.keys {
                if self.valid(key) && self.place(key.slot) == Place::Pending {
                    self.relist(key.slot, Place::Ready);
                    slots.push(key.slot);
                }
            }
        }
    }

    /// The listeners ready now, oldest first. One put back during this turn (for being far
    /// behind) waits for the next turn, after the others.
    pub fn take_ready(&mut self, slots: &mut Vec<u32>) {
        for _ in 0..self.ready.len() {
            let Some(key) = self.ready.pop_front() else { break };
            if self.valid(key) && self.place(key.slot) == Place::Ready {
                slots.push(key.slot);
            }
        }
    }

    /// Whether a listener is ready to be served without waiting.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// When the earliest pending batch is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|d| d.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(40);

    fn taken(f: impl FnOnce(&mut Vec<u32>)) -> Vec<u32> {
        let mut slots = Vec::new();
        f(&mut slots);
        slots
    }

    #[test]
    fn without_a_window_idle_listeners_are_ready_when_the_head_moves() {
        let now = Instant::now();
        let mut schedule = Schedule::default();
        schedule.add(0, 0);
        schedule.add(1, 0);
        schedule.add(2, 1);
        assert_eq!(taken(|s| schedule.take_ready(s)), vec![0, 1, 2]);
        for slot in 0..3 {
            schedule.make_idle(slot);
        }
        schedule.head_moved(0, Some(now), 300, Duration::ZERO, now);
        assert_eq!(taken(|s| schedule.take_ready(s)), vec![0, 1], "only that stream's");
        assert_eq!(schedule.place(2), Place::Idle);
    }

    #[test]
    fn a_window_holds_listeners_until_the_first_new_frame_is_that_old() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.add(0, 0);
        schedule.add(1, 0);
        schedule.take_ready(&mut Vec::new());
        schedule.make_idle(0);
        schedule.make_idle(1);
        // The frame arrived 10 ms before the driver saw it.
        let arrived = start;
        let seen = start + Duration::from_millis(10);
        schedule.head_moved(0, Some(arrived), 300, WINDOW, seen);
        assert_eq!(schedule.place(0), Place::Pending);
        assert_eq!(schedule.next_due(), Some(arrived + WINDOW));
        assert!(taken(|s| schedule.take_due(start + Duration::from_millis(30), s)).is_empty());
        let due = taken(|s| schedule.take_due(arrived + WINDOW, s));
        assert_eq!(due, vec![0, 1], "together");
        assert_eq!(schedule.place(1), Place::Ready);
        assert_eq!(schedule.next_due(), None);
    }

    #[test]
    fn large_batches_and_late_drivers_do_not_wait() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.add(0, 0);
        schedule.take_ready(&mut Vec::new());
        schedule.make_idle(0);
        schedule.head_moved(0, Some(start), WINDOW_FULL_BYTES, WINDOW, start);
        assert_eq!(taken(|s| schedule.take_ready(s)), vec![0], "a full write goes at once");
        schedule.make_idle(0);
        // The driver looks only after the window has passed (it was busy): ready at once.
        schedule.head_moved(0, Some(start), 300, WINDOW, start + WINDOW);
        assert_eq!(taken(|s| schedule.take_ready(s)), vec![0]);
    }

    #[test]
    fn stale_entries_are_ignored_after_a_listener_moves_or_leaves() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        for slot in 0..3 {
            schedule.add(slot, 0);
        }
        schedule.take_ready(&mut Vec::new());
        for slot in 0..3 {
            schedule.make_idle(slot);
        }
        schedule.head_moved(0, Some(start), 300, WINDOW, start);
        // Slot 0 blocks (a pong went out in part), slot 1 leaves: neither is served when due.
        schedule.block(0);
        schedule.remove(1);
        assert_eq!(taken(|s| schedule.take_due(start + WINDOW, s)), vec![2]);
        // Slot 1 is reused by a new listener: the old entries still do not count for it.
        schedule.add(1, 0);
        schedule.make_ready(1);
        assert_eq!(taken(|s| schedule.take_ready(s)), vec![1], "listed once, served once");
    }

    #[test]
    fn a_listener_put_back_during_a_turn_waits_for_the_next_one() {
        let mut schedule = Schedule::default();
        schedule.add(0, 0);
        schedule.add(1, 0);
        let mut turn = Vec::new();
        schedule.take_ready(&mut turn);
        assert_eq!(turn, vec![0, 1]);
        schedule.make_ready(0);
        assert!(schedule.has_ready());
        assert_eq!(taken(|s| schedule.take_ready(s)), vec![0]);
    }
}
