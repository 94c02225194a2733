import { spawn, spawnSync } from 'node:child_process';
import { TsvmError } from '../../base/errors.js';
import { INSTALLED_READY, INSTALLER_DONE, INSTALLER_FAILED } from './installer-cd.js';

/**
 * The classic install flow, with any QEMU-compatible machine command:
 *   qemu-img create -f qcow hda.img 6G
 *   <machine> -no-acpi -m 256 -cdrom installer.iso -hda hda.img -boot d   (installs, powers off)
 *   <machine> -m 256 -hda hda.img -boot c                               (boots the installed system)
 * `machine` is a command line prefix: ['qemu-system-i386', '-accel', 'tcg'] or [process.execPath, 'dist/src/cli/tsvm.js'].
 * Serial output is read from stdout (`-display none -serial stdio`), shell input goes to stdin.
 */

export interface MachineRun {
  /** Everything the machine printed (stdout and stderr). */
  output: string;
  /** Wall-clock time from start until the expected line (or the end). */
  ms: number;
  /** The expected line(s) appeared. */
  ok: boolean;
  timedOut: boolean;
  /** Why it failed, when it did (a failure line, early exit, timeout). */
  failure?: string;
}

export interface InstallFlowOptions {
  /** The machine's command line prefix, e.g. ['qemu-system-i386', '-accel', 'tcg']. */
  machine: string[];
  iso: string;
  /** The hard disk image (created before, e.g. with createDiskImage). */
  disk: string;
  /** Guest RAM in MiB (256). */
  memoryMiB?: number;
  /** true: both runs with ACPI; false: both with `-no-acpi`; unset: the classic flow (installs with `-no-acpi`, boots with ACPI). */
  acpi?: boolean;
  /** Arguments added after the flow's own (e.g. ['-vnc', ':1']). */
  extraArgs?: string[];
  installTimeoutMs?: number;
  bootTimeoutMs?: number;
  /** The shell command sent to the installed system once it is ready, and a string its output must contain. */
  command?: string;
  expect?: string;
  /** Live output of each phase (e.g. for a log). */
  onOutput?: (phase: 'install' | 'boot', text: string) => void;
}

/** The machine arguments of the installation run (after the prefix). */
export function installArgs(iso: string, disk: string, memoryMiB = 256, acpi = false): string[] {
  return [...(acpi ? [] : ['-no-acpi']), '-m', String(memoryMiB), '-cdrom', iso, '-hda', disk, '-boot', 'd', '-display', 'none', '-serial', 'stdio'];
}

/** The machine arguments of the run that boots the installed disk (after the prefix). */
export function bootArgs(disk: string, memoryMiB = 256, acpi = true): string[] {
  return [...(acpi ? [] : ['-no-acpi']), '-m', String(memoryMiB), '-hda', disk, '-boot', 'c', '-display', 'none', '-serial', 'stdio'];
}

/** Creates the hard disk: `<img> create -f <format> <path> <size>` (qemu-img by default; tsvm-img works too). */
export function createDiskImage(path: string, options: { size?: string; format?: string; img?: string[] } = {}): void {
  const [cmd, ...pre] = options.img ?? ['qemu-img'];
  const r = spawnSync(cmd, [...pre, 'create', '-f', options.format ?? 'qcow', path, options.size ?? '6G'], { encoding: 'utf8' });
  if (r.error) throw new TsvmError(`${cmd} could not run: ${r.error.message}`);
  if (r.status !== 0) throw new TsvmError(`${cmd} create failed: ${(r.stderr || '').trim()}`);
}

interface Step {
  /** Wait until the output (after the previous step) contains this. */
  waitFor: string;
  /** Then send this to stdin (if given). */
  send?: string;
}

/**
 * Runs a machine, walks through `steps` (wait for a string, optionally type a line), then stops it (SIGTERM,
 * SIGKILL after 5 s). Stops early when a `failOn` string appears or the machine exits. Only the process started
 * here is signalled.
 */
export function runMachineSteps(argv: string[], steps: Step[], options: { timeoutMs: number; failOn?: string[]; onOutput?: (text: string) => void }): Promise<MachineRun> {
  const [cmd, ...args] = argv;
  return new Promise((resolve) => {
    const start = Date.now();
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    let searchFrom = 0;
    let next = 0;
    let doneAt = 0;
    let failure: string | undefined;
    let timedOut = false;
    let stopping = false;
    let killTimer: NodeJS.Timeout | undefined;
    const stop = () => {
      if (stopping) return;
      stopping = true;
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), 5000);
    };
    const check = () => {
      while (next < steps.length) {
        const at = output.indexOf(steps[next].waitFor, searchFrom);
        if (at < 0) break;
        searchFrom = at + steps[next].waitFor.length;
        const send = steps[next].send;
        next++;
        if (send !== undefined) child.stdin.write(send);
      }
      if (next === steps.length && !doneAt) {
        doneAt = Date.now();
        stop();
        return;
      }
      for (const f of options.failOn ?? []) {
        const at = output.indexOf(f);
        if (at >= 0 && !failure) {
          // Let the lines after the failure line arrive, then stop.
          failure = output.slice(at).split('\n')[0].trim();
          setTimeout(stop, 1000);
        }
      }
    };
    const onData = (d: Buffer) => {
      const text = d.toString('latin1');
      output += text;
      options.onOutput?.(text);
      check();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.stdin.on('error', () => {});
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, options.timeoutMs);
    child.on('error', (e) => {
      failure ??= `${cmd} could not run: ${e.message}`;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      const ok = next === steps.length && !failure;
      if (!ok && !failure) {
        failure = timedOut
          ? `timed out after ${options.timeoutMs} ms waiting for '${steps[next]?.waitFor}'`
          : `the machine exited (${signal ?? code}) before '${steps[next]?.waitFor}'`;
      }
      resolve({ output, ms: (doneAt || Date.now()) - start, ok, timedOut, failure });
    });
  });
}

/** The installation run: boots the CD until the installer says it is done (or failed). */
export function runInstaller(o: InstallFlowOptions): Promise<MachineRun> {
  return runMachineSteps([...o.machine, ...installArgs(o.iso, o.disk, o.memoryMiB, o.acpi ?? false), ...(o.extraArgs ?? [])],
    [{ waitFor: INSTALLER_DONE }],
    { timeoutMs: o.installTimeoutMs ?? 120_000, failOn: [INSTALLER_FAILED], onOutput: (t) => o.onOutput?.('install', t) });
}

/** Default check of the installed system: arithmetic by the shell and the release file the installer wrote. */
export const DEFAULT_CHECK_COMMAND = 'echo tsvm-sum-$((6*7)); cat /mnt/etc/tsvm-release; echo tsvm-end-$((1+1))\n';
export const DEFAULT_CHECK_EXPECT = 'tsvm-end-2';

/** Boots the installed disk until `tsvm-guest: ready`, runs a shell command and waits for its output. */
export function bootInstalled(o: InstallFlowOptions): Promise<MachineRun> {
  return runMachineSteps([...o.machine, ...bootArgs(o.disk, o.memoryMiB, o.acpi ?? true), ...(o.extraArgs ?? [])],
    [{ waitFor: INSTALLED_READY, send: o.command ?? DEFAULT_CHECK_COMMAND }, { waitFor: o.expect ?? DEFAULT_CHECK_EXPECT }],
    { timeoutMs: o.bootTimeoutMs ?? 120_000, onOutput: (t) => o.onOutput?.('boot', t) });
}

/** Both runs, one after the other; the boot run is skipped when the installation failed. */
export async function runInstallFlow(o: InstallFlowOptions): Promise<{ install: MachineRun; boot: MachineRun | null }> {
  const install = await runInstaller(o);
  if (!install.ok) return { install, boot: null };
  return { install, boot: await bootInstalled(o) };
}
