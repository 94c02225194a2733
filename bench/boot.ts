import { fileURLToPath } from 'node:url';
import { ensureDefaultGuest } from '../src/guest/default-guest.js';
import { type BootTiming, nodeScriptCommand, timeProcessBoot, timeQemuBoot, timeV86Boot } from './boot-peers.js';
import { measureMips, measureX87Mips } from './mips.js';

/**
 * Boot benchmark: the default guest with tsvm.bench=1 (it powers off right after its ready line) on tsvm,
 * QEMU's software CPU and v86, from one run; then guest MIPS of the emulated CPU on a CPU-bound loop.
 */
const TIMEOUT_MS = Number(process.env.TSVM_BENCH_TIMEOUT_MS ?? 15 * 60_000);

const guest = await ensureDefaultGuest({ onProgress: (l) => process.stderr.write(`tsvm-guest: ${l}\n`) });
const cmdline = `${guest.cmdline} tsvm.bench=1`;
const [node, ...tsvmCli] = nodeScriptCommand(fileURLToPath(new URL('../src/cli/tsvm.js', import.meta.url)));
const results: [string, BootTiming][] = [];
process.stderr.write('booting with QEMU (tcg)...\n');
results.push(['qemu-system-i386 -accel tcg', await timeQemuBoot(guest.kernel, guest.initrd, cmdline, TIMEOUT_MS)]);
process.stderr.write('booting with v86...\n');
results.push(['v86', await timeV86Boot(guest.kernel, guest.initrd, cmdline, TIMEOUT_MS).catch((e) => ({ readyMs: NaN, exitMs: NaN, note: String(e) }))]);
const tsvmArgs = [...tsvmCli, '-m', '256', '-kernel', guest.kernel, '-initrd', guest.initrd, '-append', cmdline, '-nographic'];
process.stderr.write('booting with tsvm...\n');
results.push(['tsvm -accel tcg', await timeProcessBoot(node, tsvmArgs, TIMEOUT_MS)]);
// The interpreter alone (no compiled blocks), for reference: several minutes, so with a shorter limit.
process.stderr.write('booting with tsvm, TSVM_JIT=0 (interpreter only)...\n');
results.push(['tsvm -accel tcg, TSVM_JIT=0', await timeProcessBoot(node, tsvmArgs, Math.min(TIMEOUT_MS, 5 * 60_000), { TSVM_JIT: '0' })]);

const s = (ms: number) => (Number.isNaN(ms) ? 'n/a' : (ms / 1000).toFixed(1) + ' s');
const tsvm = results[2][1];
const ratio = (base: number, other: number) => (Number.isNaN(base) || Number.isNaN(other) ? 'n/a' : (base / other).toFixed(2) + 'x');
console.log(`\nBoot of the default guest (${guest.kernelVersion}, -m 256, ${cmdline}) to "tsvm-guest: ready" and to exit after poweroff:\n`);
const v86 = results[1][1];
console.log('| emulator | ready | exit | tsvm / this (exit) | this / v86 (ready) |');
console.log('|---|---|---|---|---|');
for (const [name, t] of results) {
  console.log(`| ${name} | ${s(t.readyMs)} | ${s(t.exitMs)}${t.note ? ` (${t.note})` : ''} | ${ratio(tsvm.exitMs, t.exitMs)} | ${ratio(t.readyMs, v86.readyMs)} |`);
}
const interpreted = measureMips(3000, false);
const compiled = measureMips(3000, 20);
console.log(`\nGuest MIPS of the emulated CPU on a CPU-bound integer loop: ${compiled.toFixed(1)} with compiled blocks, ${interpreted.toFixed(1)} interpreted`);
const x87Interpreted = measureX87Mips(3000, false);
const x87Compiled = measureX87Mips(3000, 20);
console.log(`Guest MIPS on an x87 loop (FMUL, FADD, FDIV, FSQRT, DEC, JNZ): ${x87Compiled.toFixed(1)} with compiled blocks, ${x87Interpreted.toFixed(1)} interpreted`);
