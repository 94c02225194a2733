import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultGuestOrNull, runConsole, TSVM } from './guest-helpers.js';

/** The emulated CPU boots the default guest in a few minutes on these machines; allow for a slow CI host. */
const BOOT_TIMEOUT_MS = 12 * 60_000;

/** What Linux says when the firmware's APIC or MP description, or the APICs themselves, are wrong. */
const COMPLAINTS = [
  /MPTABLE: no processors registered/,
  /BIOS bug, MP table errors detected/,
  /Local APIC disabled by BIOS/,
  /no APIC, boot with/,
  /APIC: disable apic facility/,
  /APIC error on CPU/,
  /[Ss]purious APIC interrupt/,
  // Linux's final verdict on the timer. Not its first attempt's "MP-BIOS bug: 8254 timer not connected to
  // IO-APIC": that check wants 5 PIT ticks within 160 ms of TSC time, and fails (then succeeds through the 8259A)
  // when a loaded host deschedules the emulator for that long, as it does QEMU.
  /IO-APIC \+ timer doesn't work/,
  /unexpected IRQ trap/,
  /irq \d+: nobody cared/,
];

for (const acpi of [true, false]) {
  test(`the default guest uses the APICs ${acpi ? 'from the MADT' : 'from the MP table (-no-acpi)'}: I/O APIC lines, the lapic clock event device, no complaints`, { timeout: BOOT_TIMEOUT_MS + 60_000 }, async (t) => {
    const { guest, reason } = await defaultGuestOrNull();
    if (!guest) return t.skip(reason);
    // Without ACPI the guest cannot power off: it reboots, which -no-reboot turns into an exit.
    // Guest time from the instruction count (-icount): Linux's checks of the APIC timer against the PIT (with
    // -no-acpi the PIT alone, as there is no PM timer) then see the same clock however loaded the host is.
    const r = await runConsole(process.execPath, [TSVM, '-m', '128', '-icount', 'shift=1,sleep=off', ...(acpi ? [] : ['-no-acpi', '-no-reboot']), '-kernel', guest.kernel,
      '-initrd', guest.initrd, '-append', guest.cmdline, '-nographic'],
    `cat /proc/interrupts; echo ce=$(cat /sys/devices/system/clockevents/clockevent0/current_device); dmesg; ${acpi ? 'poweroff' : 'reboot'} -f\n`, '', BOOT_TIMEOUT_MS);
    assert.equal(r.timedOut, false, `boot did not finish: ${r.output.slice(-800)}`);
    assert.match(r.output, /IO-APIC\s+2-edge\s+timer/);
    assert.match(r.output, /IO-APIC\s+4-edge\s+ttyS0/);
    assert.match(r.output, acpi ? /ACPI: Using ACPI \(MADT\) for SMP configuration information/ : /MPTABLE: APIC at: 0xFEE00000/);
    assert.match(r.output, /Enabling APIC mode:\s+Flat\.\s+Using 1 I\/O APICs/);
    for (const complaint of COMPLAINTS) assert.doesNotMatch(r.output, complaint);
    const local = Number(/LOC:\s+(\d+)/.exec(r.output)?.[1]);
    assert.ok(local > 0, 'local timer interrupts counted');
    assert.equal(r.status, 0);
    assert.doesNotMatch(r.output, /APIC timer disabled due to verification failure/);
    assert.match(r.output, /ce=lapic/);
  });
}
