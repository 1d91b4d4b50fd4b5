//! The device event loop: one thread that serves every device's descriptors (queue
//! notifications, backend readiness, rate-limiter timers and, on the software CPU, the routes
//! from device interrupt eventfds into the IOAPIC), so device work never runs on a vCPU
//! thread. It ends when the VM stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;

use crate::stop::StopSignal;
use crate::threads::VmThread;

/// Anything the loop serves.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// The loop before it starts: subscribers are added, then [`EventLoop::start`] runs it.
pub struct EventLoop {
    manager: EventManager<Subscriber>,
}

/// Ends the loop when the VM's stop descriptor becomes readable.
struct StopWatch {
    fd: std::os::fd::RawFd,
    done: Arc<AtomicBool>,
}

impl MutEventSubscriber for StopWatch {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new_raw(self.fd, EventSet::IN)) {
            log::error!("device loop: cannot watch the stop signal: {e}");
        }
    }

    fn process(&mut self, _events: Events, ops: &mut EventOps) {
        // The descriptor stays readable: stop watching it, and end the loop.
        let _ = ops.remove(Events::empty_raw(self.fd));
        self.done.store(true, Ordering::SeqCst);
    }
}

impl EventLoop {
    /// An empty loop.
    pub fn new() -> std::io::Result<Self> {
        Ok(EventLoop {
            manager: EventManager::new().map_err(|e| std::io::Error::other(format!("{e:?}")))?,
        })
    }

    /// Adds `subscriber`; its `init` registers its descriptors.
    pub fn add(&mut self, subscriber: Subscriber) {
        self.manager.add_subscriber(subscriber);
    }

    /// Runs the loop on its own thread until `stop` is raised; a panic there stops the VM.
    pub fn start(mut self, stop: Arc<StopSignal>) -> std::io::Result<VmThread> {
        let done = Arc::new(AtomicBool::new(false));
        self.add(Arc::new(Mutex::new(StopWatch {
            fd: stop.stopped_fd(),
            done: done.clone(),
        })));
        VmThread::spawn("devices", stop, move || {
            while !done.load(Ordering::SeqCst) {
                if let Err(e) = self.manager.run() {
                    log::error!("device loop: {e:?}");
                    return;
                }
            }
        })
    }
}
