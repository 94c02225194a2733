import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** Milliseconds from start to the guest's ready line and to the end after its poweroff (NaN if not reached). */
export interface BootTiming {
  readyMs: number;
  exitMs: number;
  note?: string;
}

export const READY_LINE = 'tsvm-guest: ready';

/**
 * The command that runs a tsvm CLI script as its `#!/usr/bin/env -S node OPTIONS` line does (as `npx tsvm` would):
 * this Node, the options of that line, the script.
 */
export function nodeScriptCommand(script: string): [string, ...string[]] {
  const shebang = /^#!\/usr\/bin\/env -S node(.*)$/m.exec(readFileSync(script, 'utf8').split('\n', 1)[0]!);
  return [process.execPath, ...(shebang?.[1]!.trim().split(/\s+/).filter(Boolean) ?? []), script];
}

/** Runs a VM command whose console is stdout and times it. */
export function timeProcessBoot(command: string, args: string[], timeoutMs: number, env?: NodeJS.ProcessEnv): Promise<BootTiming> {
  return new Promise((resolve) => {
    const start = performance.now();
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: env ? { ...process.env, ...env } : process.env });
    let out = '';
    let readyMs = NaN;
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (Number.isNaN(readyMs) && out.includes(READY_LINE)) readyMs = performance.now() - start;
    });
    child.stderr.resume();
    child.on('close', (status) => {
      clearTimeout(timer);
      const exitMs = status === 0 ? performance.now() - start : NaN;
      resolve({ readyMs, exitMs, note: status === 0 ? undefined : `exit ${status}` });
    });
  });
}

export function timeQemuBoot(kernel: string, initrd: string, cmdline: string, timeoutMs: number): Promise<BootTiming> {
  return timeProcessBoot('qemu-system-i386', ['-accel', 'tcg', '-M', 'pc', '-m', '256', '-kernel', kernel, '-initrd', initrd,
    '-append', cmdline, '-nographic', '-no-reboot'], timeoutMs);
}

/**
 * Boots the same kernel, initrd and command line in the v86 emulator (npm package `v86`, with Debian's
 * SeaBIOS), in this process. v86 does not exit on poweroff, so the end is the kernel's "Power down" line.
 */
export async function timeV86Boot(kernel: string, initrd: string, cmdline: string, timeoutMs: number): Promise<BootTiming> {
  const require = createRequire(import.meta.url);
  const v86Dir = dirname(require.resolve('v86'));
  const { V86 } = (await import('v86')) as unknown as { V86: new (options: Record<string, unknown>) => V86Instance };
  const buffer = (path: string) => {
    const b = readFileSync(path);
    return { buffer: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) };
  };
  return new Promise((resolve) => {
    const start = performance.now();
    let out = '';
    let readyMs = NaN;
    const emulator = new V86({
      wasm_path: join(v86Dir, 'v86.wasm'),
      bios: buffer('/usr/share/seabios/bios.bin'),
      vga_bios: buffer('/usr/share/seabios/vgabios-stdvga.bin'),
      bzimage: buffer(kernel),
      initrd: buffer(initrd),
      cmdline,
      memory_size: 256 * 2 ** 20,
      acpi: true,
      autostart: true,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true,
    });
    const finish = (exitMs: number, note?: string) => {
      clearTimeout(timer);
      void emulator.destroy();
      resolve({ readyMs, exitMs, note });
    };
    const timer = setTimeout(() => finish(NaN, 'timeout'), timeoutMs);
    emulator.add_listener('serial0-output-byte', (byte: number) => {
      out += String.fromCharCode(byte);
      if (Number.isNaN(readyMs) && out.includes(READY_LINE)) readyMs = performance.now() - start;
      if (out.includes('reboot: Power down') || out.includes('reboot: System halted')) finish(performance.now() - start);
    });
  });
}

interface V86Instance {
  add_listener(event: string, listener: (value: number) => void): void;
  destroy(): Promise<void>;
}
