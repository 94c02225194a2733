import { type ChildProcess, spawn } from 'node:child_process';
import { type Socket, createConnection } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * QEMU (`qemu-system-i386`) driven over QMP, for benchmarks and tests that compare with tsvm on the VGA text
 * screen: the screen is read from guest memory at 0xB8000 with the monitor's `xp` command.
 */
export class QemuScreen {
  private readonly child: ChildProcess;
  private readonly dir: string;
  private socket: Socket | null = null;
  private buffer = '';
  private readonly waiting: ((reply: { return?: unknown; error?: unknown }) => void)[] = [];
  readonly startedAt = performance.now();
  /** Everything QEMU wrote to stdout (the serial console with -serial stdio). */
  output = '';

  constructor(args: string[]) {
    this.dir = mkdtempSync(join(tmpdir(), 'tsvm-qmp-'));
    this.child = spawn('qemu-system-i386', ['-display', 'none', '-qmp', `unix:${join(this.dir, 'qmp')},server=on,wait=off`, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.child.stdout!.on('data', (d: Buffer) => (this.output += d.toString('latin1')));
  }

  private async connect(): Promise<void> {
    for (let i = 0; i < 100 && !this.socket; i++) {
      try {
        this.socket = await new Promise<Socket>((resolve, reject) => {
          const s = createConnection(join(this.dir, 'qmp'));
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    if (!this.socket) throw new Error('could not connect to QEMU\'s QMP socket');
    this.socket.on('data', (d) => {
      this.buffer += d.toString();
      let i: number;
      while ((i = this.buffer.indexOf('\n')) >= 0) {
        const reply = JSON.parse(this.buffer.slice(0, i)) as { return?: unknown; error?: unknown };
        this.buffer = this.buffer.slice(i + 1);
        if ('return' in reply || 'error' in reply) this.waiting.shift()?.(reply);
      }
    });
    await this.command('qmp_capabilities');
  }

  async command(execute: string, args?: object): Promise<unknown> {
    if (!this.socket) await this.connect();
    const reply = await new Promise<{ return?: unknown; error?: unknown }>((resolve) => {
      this.waiting.push(resolve);
      this.socket!.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    });
    if (reply.error) throw new Error(`QMP ${execute}: ${JSON.stringify(reply.error)}`);
    return reply.return;
  }

  /** The 80x25 text screen as lines. */
  async textScreen(): Promise<string[]> {
    const dump = (await this.command('human-monitor-command', { 'command-line': 'xp /4000bx 0xb8000' })) as string;
    const bytes = dump.split('\n').flatMap((l) => [...l.slice(l.indexOf(':') + 1).matchAll(/0x([0-9a-f]{2})/g)].map((m) => parseInt(m[1], 16)));
    const lines: string[] = [];
    for (let row = 0; row < 25; row++) {
      let s = '';
      for (let col = 0; col < 80; col++) {
        const ch = bytes[(row * 80 + col) * 2] ?? 32;
        s += ch >= 32 && ch < 127 ? String.fromCharCode(ch) : ' ';
      }
      lines.push(s.trimEnd());
    }
    return lines;
  }

  /** Seconds since QEMU was started when the screen first matches `pattern` (polled), or null at the timeout. */
  async waitForScreen(pattern: RegExp, timeoutMs: number): Promise<number | null> {
    while (performance.now() - this.startedAt < timeoutMs) {
      if (pattern.test((await this.textScreen()).join('\n'))) return (performance.now() - this.startedAt) / 1000;
      await new Promise((r) => setTimeout(r, 20));
    }
    return null;
  }

  /** Seconds since start when the serial output first contains `text`, or null at the timeout. */
  async waitForOutput(text: string, timeoutMs: number): Promise<number | null> {
    while (performance.now() - this.startedAt < timeoutMs) {
      if (this.output.includes(text)) return (performance.now() - this.startedAt) / 1000;
      if (this.child.exitCode !== null) return null;
      await new Promise((r) => setTimeout(r, 20));
    }
    return null;
  }

  close(): void {
    this.socket?.destroy();
    this.child.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}
