//! ACPI tables for a hardware-reduced x86 platform, built with `acpi_tables`: RSDP, XSDT,
//! FADT (sleep control/status and reset registers), MADT (one local APIC per vCPU and the
//! IOAPIC) and a DSDT describing `\_S5`, the serial ports, the RTC and the virtio-mmio
//! devices (`LNRO0005`, which Linux's virtio_mmio driver matches through ACPI).

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{aml, Aml};
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{ACPI_TABLES_ADDR, ACPI_TABLES_END, IOAPIC_ADDR, LAPIC_ADDR};
use crate::GuestMemory;

const OEM_ID: [u8; 6] = *b"EMBER ";
const OEM_TABLE_ID: [u8; 8] = *b"EMBERVM ";
const OEM_REVISION: u32 = 1;

/// IA-PC boot architecture flags (FADT): no VGA, no MSI. No 8042 flag, so Linux does not probe
/// a keyboard; `reboot=k` still resets through the i8042 port.
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;

/// Power-management registers the FADT points at (I/O ports).
#[derive(Debug, Clone, Copy)]
pub struct PmRegisters {
    /// Sleep control register port.
    pub sleep_control_port: u16,
    /// Sleep status register port.
    pub sleep_status_port: u16,
    /// Reset register port.
    pub reset_port: u16,
    /// Value written to the reset register to reset.
    pub reset_value: u8,
    /// SLP_TYP announced for S5 (soft off).
    pub s5_sleep_type: u8,
}

/// A legacy UART to describe: I/O port base and ISA IRQ.
#[derive(Debug, Clone, Copy)]
pub struct Uart {
    /// First I/O port.
    pub port: u16,
    /// Interrupt (GSI).
    pub irq: u32,
}

/// The CMOS real-time clock to describe.
#[derive(Debug, Clone, Copy)]
pub struct CmosRtc {
    /// Index port (the data port follows).
    pub port: u16,
    /// CMOS register holding the century.
    pub century_register: u8,
}

/// The i8042 keyboard controller to describe (as PNP0303), so that Linux finds its keyboard
/// and maps its interrupt through ACPI.
#[derive(Debug, Clone, Copy)]
pub struct Keyboard {
    /// Data port.
    pub data_port: u16,
    /// Status and command port.
    pub command_port: u16,
    /// Interrupt (GSI).
    pub irq: u32,
}

/// A virtio-mmio device to describe: its register window and interrupt.
#[derive(Debug, Clone, Copy)]
pub struct VirtioMmio {
    /// Guest physical address of the window (below 4 GiB).
    pub addr: u32,
    /// Window size in bytes.
    pub size: u32,
    /// Edge-triggered, active-high interrupt (GSI).
    pub gsi: u32,
}

/// What the tables describe.
#[derive(Debug, Clone)]
pub struct Platform {
    /// Number of vCPUs; their APIC IDs are 0..vcpu_count.
    pub vcpu_count: u8,
    /// Sleep and reset registers.
    pub pm: PmRegisters,
    /// Serial ports.
    pub uarts: Vec<Uart>,
    /// The real-time clock.
    pub rtc: CmosRtc,
    /// The keyboard controller.
    pub keyboard: Keyboard,
    /// virtio-mmio devices.
    pub virtio: Vec<VirtioMmio>,
}

fn io_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

fn bytes(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

/// AML already encoded, to put inside a scope.
struct Encoded(Vec<u8>);

impl Aml for Encoded {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

/// Devices named `paths[i]`, each with `_HID` `hid`, `_UID` i and `_CRS` `crs[i]`.
fn numbered_devices(
    hid: &dyn Aml,
    paths: &[String],
    crs: &[aml::ResourceTemplate],
) -> Vec<Encoded> {
    paths
        .iter()
        .zip(crs)
        .enumerate()
        .map(|(uid, (path, crs))| {
            let uid = uid as u32;
            let names = [
                aml::Name::new("_HID".into(), hid),
                aml::Name::new("_UID".into(), &uid),
                aml::Name::new("_CRS".into(), crs),
            ];
            let device = aml::Device::new(
                path.as_str().into(),
                names.iter().map(|x| x as &dyn Aml).collect(),
            );
            Encoded(bytes(&device))
        })
        .collect()
}

fn dsdt(platform: &Platform) -> Vec<u8> {
    let mut body = Vec::new();
    let s5 = aml::Package::new(vec![&platform.pm.s5_sleep_type]);
    aml::Name::new("_S5_".into(), &s5).to_aml_bytes(&mut body);
    let uart_res: Vec<(aml::IO, aml::Interrupt)> = platform
        .uarts
        .iter()
        .map(|u| {
            (
                aml::IO::new(u.port, u.port, 1, 8),
                aml::Interrupt::new(true, true, false, false, u.irq),
            )
        })
        .collect();
    let uart_crs: Vec<aml::ResourceTemplate> = uart_res
        .iter()
        .map(|(io, irq)| aml::ResourceTemplate::new(vec![io, irq]))
        .collect();
    let uart_paths: Vec<String> = (1..=uart_crs.len()).map(|i| format!("COM{i}")).collect();
    let uarts = numbered_devices(&aml::EISAName::new("PNP0501"), &uart_paths, &uart_crs);
    // virtio-mmio devices: VR00, VR01... with the register window and the (edge-triggered,
    // active-high) interrupt.
    let virtio_res: Vec<(aml::Memory32Fixed, aml::Interrupt)> = platform
        .virtio
        .iter()
        .map(|d| {
            (
                aml::Memory32Fixed::new(true, d.addr, d.size),
                aml::Interrupt::new(true, true, false, false, d.gsi),
            )
        })
        .collect();
    let virtio_crs: Vec<aml::ResourceTemplate> = virtio_res
        .iter()
        .map(|(window, irq)| aml::ResourceTemplate::new(vec![window, irq]))
        .collect();
    let virtio_paths: Vec<String> = (0..virtio_crs.len())
        .map(|i| format!("VR{i:02X}"))
        .collect();
    let virtio_hid: &'static str = "LNRO0005";
    let virtio = numbered_devices(&virtio_hid, &virtio_paths, &virtio_crs);
    let rtc_hid = aml::EISAName::new("PNP0B00");
    let rtc_io = aml::IO::new(platform.rtc.port, platform.rtc.port, 1, 2);
    let rtc_crs = aml::ResourceTemplate::new(vec![&rtc_io]);
    let rtc_names = [
        aml::Name::new("_HID".into(), &rtc_hid),
        aml::Name::new("_CRS".into(), &rtc_crs),
    ];
    let rtc = aml::Device::new(
        "RTC_".into(),
        rtc_names.iter().map(|x| x as &dyn Aml).collect(),
    );
    let kbd = &platform.keyboard;
    let kbd_data = aml::IO::new(kbd.data_port, kbd.data_port, 1, 1);
    let kbd_command = aml::IO::new(kbd.command_port, kbd.command_port, 1, 1);
    let kbd_irq = aml::Interrupt::new(true, true, false, false, kbd.irq);
    let kbd_crs = aml::ResourceTemplate::new(vec![&kbd_data, &kbd_command, &kbd_irq]);
    let kbd_hid = aml::EISAName::new("PNP0303");
    let kbd_names = [
        aml::Name::new("_HID".into(), &kbd_hid),
        aml::Name::new("_CRS".into(), &kbd_crs),
    ];
    let keyboard = aml::Device::new(
        "PS2K".into(),
        kbd_names.iter().map(|x| x as &dyn Aml).collect(),
    );
    let mut children: Vec<&dyn Aml> = uarts.iter().map(|d| d as &dyn Aml).collect();
    children.push(&rtc);
    children.push(&keyboard);
    children.extend(virtio.iter().map(|d| d as &dyn Aml));
    aml::Scope::new("_SB_".into(), children).to_aml_bytes(&mut body);

    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.append_slice(&body);
    table.as_slice().to_vec()
}

fn fadt(platform: &Platform, dsdt_addr: u64) -> Vec<u8> {
    let pm = &platform.pm;
    let mut builder = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup);
    builder.iapc_boot_arch = (IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED).into();
    builder.century = platform.rtc.century_register;
    builder.reset_reg = io_register(pm.reset_port);
    builder.reset_value = pm.reset_value;
    builder.sleep_control_reg = io_register(pm.sleep_control_port);
    builder.sleep_status_reg = io_register(pm.sleep_status_port);
    bytes(&builder.finalize())
}

fn madt(platform: &Platform) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR as u32),
    );
    for id in 0..platform.vcpu_count {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(0, IOAPIC_ADDR as u32, 0));
    bytes(&madt)
}

/// Writes the tables into the BIOS area and returns the address of the RSDP.
pub fn write_tables(mem: &GuestMemory, platform: &Platform) -> Result<u64, String> {
    let rsdp_addr = ACPI_TABLES_ADDR;
    let mut next = rsdp_addr + Rsdp::len() as u64;
    let mut place = |len: usize| {
        let at = next.next_multiple_of(16);
        next = at + len as u64;
        at
    };
    let dsdt = dsdt(platform);
    let dsdt_addr = place(dsdt.len());
    let fadt = fadt(platform, dsdt_addr);
    let fadt_addr = place(fadt.len());
    let madt = madt(platform);
    let madt_addr = place(madt.len());
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt = bytes(&xsdt);
    let xsdt_addr = place(xsdt.len());
    if next > ACPI_TABLES_END {
        return Err(format!(
            "ACPI tables need {:#x} bytes, more than fit",
            next - rsdp_addr
        ));
    }
    for (addr, table) in [
        (dsdt_addr, &dsdt),
        (fadt_addr, &fadt),
        (madt_addr, &madt),
        (xsdt_addr, &xsdt),
    ] {
        mem.write_slice(table, GuestAddress(addr))
            .map_err(|e| e.to_string())?;
    }
    mem.write_slice(
        &bytes(&Rsdp::new(OEM_ID, xsdt_addr)),
        GuestAddress(rsdp_addr),
    )
    .map_err(|e| e.to_string())?;
    Ok(rsdp_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(vcpus: u8) -> Platform {
        Platform {
            vcpu_count: vcpus,
            pm: PmRegisters {
                sleep_control_port: 0x600,
                sleep_status_port: 0x601,
                reset_port: 0x602,
                reset_value: 1,
                s5_sleep_type: 5,
            },
            uarts: vec![Uart {
                port: 0x3f8,
                irq: 4,
            }],
            rtc: CmosRtc {
                port: 0x70,
                century_register: 0x32,
            },
            keyboard: Keyboard {
                data_port: 0x60,
                command_port: 0x64,
                irq: 1,
            },
            virtio: vec![
                VirtioMmio {
                    addr: 0xc000_0000,
                    size: 0x1000,
                    gsi: 5,
                },
                VirtioMmio {
                    addr: 0xc000_1000,
                    size: 0x1000,
                    gsi: 6,
                },
            ],
        }
    }

    fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// Reads a whole table at `addr` and checks its checksum.
    fn table(mem: &GuestMemory, addr: u64) -> Vec<u8> {
        let len = u32_at(&read(mem, addr, 8), 4) as usize;
        let t = read(mem, addr, len);
        assert_eq!(t.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "checksum");
        t
    }

    #[test]
    fn tables_chain_from_rsdp_and_describe_every_vcpu() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
        let rsdp = write_tables(&mem, &platform(4)).unwrap();
        let r = read(&mem, rsdp, 36);
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(r[..20].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let xsdt = table(&mem, u64_at(&r, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        let (fadt_addr, madt_addr) = (u64_at(&xsdt, 36), u64_at(&xsdt, 44));

        let fadt = table(&mem, fadt_addr);
        assert_eq!(&fadt[..4], b"FACP");
        assert_ne!(u32_at(&fadt, 112) & (1 << 20), 0, "hardware-reduced");
        assert_eq!(fadt[116], 1, "reset register in I/O space");
        assert_eq!(u64_at(&fadt, 120), 0x602);
        assert_eq!(u64_at(&fadt, 244 + 4), 0x600, "sleep control register");
        let dsdt = table(&mem, u64_at(&fadt, 140));
        assert_eq!(&dsdt[..4], b"DSDT");
        assert!(dsdt.windows(4).any(|w| w == b"_S5_"));
        assert!(dsdt.windows(4).any(|w| w == b"COM1"));
        assert!(dsdt.windows(4).any(|w| w == b"RTC_"));
        // Each virtio device: its name, the LNRO0005 ID, a Memory32Fixed descriptor (0x86,
        // length 9, read-write) with its window, and an extended interrupt descriptor.
        for (name, addr) in [(b"VR00", 0xc000_0000u32), (b"VR01", 0xc000_1000)] {
            assert!(dsdt.windows(4).any(|w| w == name));
            let mut window = vec![0x86, 9, 0, 1];
            window.extend_from_slice(&addr.to_le_bytes());
            window.extend_from_slice(&0x1000u32.to_le_bytes());
            assert!(dsdt.windows(window.len()).any(|w| w == window));
        }
        assert_eq!(dsdt.windows(8).filter(|w| w == b"LNRO0005").count(), 2);
        assert_eq!(fadt[108], 0x32, "century register");

        let madt = table(&mem, madt_addr);
        assert_eq!(&madt[..4], b"APIC");
        assert_eq!(u32_at(&madt, 36), LAPIC_ADDR as u32);
        let mut apic_ids = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            let (kind, len) = (madt[at], madt[at + 1] as usize);
            if kind == 0 {
                apic_ids.push(madt[at + 3]);
            }
            at += len;
        }
        assert_eq!(apic_ids, vec![0, 1, 2, 3]);
    }
}
