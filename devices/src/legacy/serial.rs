//! The 16550A UART on COM1, built on vm-superio, with host output and flow-controlled input.

use std::io::{self, Write};
use std::sync::Arc;

use vm_superio::serial::SerialEvents;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::bus::BusDevice;
use crate::irq::{InterruptLine, IrqTrigger};

/// I/O port base of COM1.
pub const COM1_PORT: u64 = 0x3f8;
/// Ports a UART occupies.
pub const UART_PORTS: u64 = 8;
/// ISA IRQ of COM1.
pub const COM1_IRQ: u32 = 4;

/// Signals an eventfd when the guest has drained the receive FIFO, so an input source can
/// feed more without polling.
struct InputSpace(EventFd);

impl SerialEvents for InputSpace {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        if let Err(e) = self.0.write(1) {
            log::error!("serial: cannot signal input space: {e}");
        }
    }
}

/// A UART whose transmitted bytes go to `out` and whose input is queued by
/// [`Serial::enqueue_input`].
pub struct Serial {
    uart: vm_superio::Serial<IrqTrigger, InputSpace, Box<dyn Write + Send>>,
    input_space: EventFd,
}

impl Serial {
    /// A UART raising `irq` and writing what the guest sends to `out`.
    pub fn new(irq: Arc<dyn InterruptLine>, out: Box<dyn Write + Send>) -> io::Result<Self> {
        let input_space = EventFd::new(EFD_NONBLOCK)?;
        let events = InputSpace(input_space.try_clone()?);
        Ok(Serial {
            uart: vm_superio::Serial::with_events(IrqTrigger(irq), events, out),
            input_space,
        })
    }

    /// An eventfd that becomes readable whenever the guest empties the receive FIFO.
    pub fn input_space_event(&self) -> io::Result<EventFd> {
        self.input_space.try_clone()
    }

    /// Queues as many of `bytes` as the receive FIFO has room for and raises the receive
    /// interrupt. Returns how many were taken (0 when the FIFO is full).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            Err(vm_superio::serial::Error::FullFifo) => 0,
            Err(e) => {
                log::error!("serial: cannot queue input: {e:?}");
                0
            }
        }
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self.uart.read((offset as u8).wrapping_add(i as u8));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            if let Err(e) = self.uart.write((offset as u8).wrapping_add(i as u8), *byte) {
                log::debug!("serial: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct CountingLine(AtomicUsize);

    impl InterruptLine for CountingLine {
        fn trigger(&self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const THR: u64 = 0;
    const IER: u64 = 1;
    const LSR: u64 = 5;

    #[test]
    fn transmitted_bytes_reach_the_host() {
        let sink = Sink::default();
        let mut serial =
            Serial::new(Arc::new(CountingLine::default()), Box::new(sink.clone())).unwrap();
        for b in b"hi\n" {
            serial.write(THR, &[*b]);
        }
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"hi\n");
        let mut lsr = [0u8];
        serial.read(LSR, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter holding register empty");
    }

    #[test]
    fn input_is_flow_controlled_and_signals_space() {
        let line = Arc::new(CountingLine::default());
        let mut serial = Serial::new(line.clone(), Box::new(io::sink())).unwrap();
        serial.write(IER, &[0x1]); // receive-data interrupt on
        let space = serial.input_space_event().unwrap();
        let input = [b'x'; 100];
        let taken = serial.enqueue_input(&input);
        assert_eq!(taken, 64, "FIFO depth");
        assert_eq!(serial.enqueue_input(&input), 0);
        assert!(
            line.0.load(Ordering::SeqCst) >= 1,
            "receive interrupt raised"
        );
        assert!(
            space.read().is_err(),
            "no space signalled while the FIFO is full"
        );
        let mut byte = [0u8];
        for _ in 0..64 {
            serial.read(THR, &mut byte);
            assert_eq!(byte, [b'x']);
        }
        assert_eq!(space.read().unwrap(), 1, "guest drained the FIFO");
        let mut lsr = [0u8];
        serial.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 1, 0, "no data ready");
    }
}
