//! Serving a queue: taking the chains the driver made available, handing each to the
//! device, returning it through the used ring, and interrupting the driver only as often as
//! EVENT_IDX asks, with a bound on the work done per wake-up so that one busy queue cannot
//! starve the other devices on the event loop.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use super::Signals;
use crate::GuestMemory;

/// What the device did with one chain.
pub enum Served {
    /// Done: return the chain with this many bytes written into it.
    Used(u32),
    /// Not now (a rate limiter is empty, or the backend cannot take more): the chain goes back
    /// to the queue and serving stops until the device calls again.
    Later,
}

/// How serving a queue ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Nothing is left to serve.
    Empty,
    /// The budget ran out with chains left; serve again soon.
    BudgetSpent,
    /// The device asked to stop ([`Served::Later`]).
    Paused,
}

/// Serves at most `budget` chains of `queue`. A driver error (a bad avail index, a used ring
/// outside memory) or an error from `serve` is returned as text for
/// [`Signals::needs_reset`]; chains already used are still signalled.
pub fn serve_queue(
    queue: &mut Queue,
    mem: &GuestMemory,
    signals: &Signals,
    budget: usize,
    mut serve: impl FnMut(DescriptorChain<&GuestMemory>) -> Result<Served, String>,
) -> Result<Drained, String> {
    let mut used = 0usize;
    let result = (|| loop {
        queue.disable_notification(mem).map_err(|e| e.to_string())?;
        loop {
            if used == budget {
                return Ok(Drained::BudgetSpent);
            }
            let chain = queue
                .iter(mem)
                .map_err(|e| format!("available ring: {e}"))?
                .next();
            let Some(chain) = chain else {
                break;
            };
            let head = chain.head_index();
            match serve(chain)? {
                Served::Used(len) => {
                    queue
                        .add_used(mem, head, len)
                        .map_err(|e| format!("used ring: {e}"))?;
                    used += 1;
                }
                Served::Later => {
                    queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                    return Ok(Drained::Paused);
                }
            }
        }
        if !queue.enable_notification(mem).map_err(|e| e.to_string())? {
            return Ok(Drained::Empty);
        }
    })();
    if used > 0 && queue.needs_notification(mem).unwrap_or(true) {
        signals.used_buffers();
    }
    result
}
