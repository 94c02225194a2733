import { type ChildProcess, spawn } from 'node:child_process';

/** A guest boot on a loaded 2-core host takes a minute or more (the network tests run two at once). */
export const VM_TIMEOUT_MS = 400_000;

/** A VM process whose console the test reads and types into once the guest says it is ready. */
export class ConsoleVm {
  output = '';
  private readonly child: ChildProcess;
  readonly closed: Promise<number | null>;

  constructor(command: string, args: string[], script: string) {
    this.child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let typed = false;
    const onData = (d: Buffer) => {
      this.output += d.toString('latin1');
      if (!typed && this.output.includes('tsvm-guest: ready')) {
        typed = true;
        this.child.stdin!.write(script);
      }
    };
    this.child.stdout!.on('data', onData);
    this.child.stderr!.on('data', onData);
    this.child.stdin!.on('error', () => {});
    this.closed = new Promise((resolve) => this.child.on('close', resolve));
  }

  /** Resolves when the console shows `pattern` (a whole line), rejects after the timeout or when the VM ends. */
  async waitFor(pattern: RegExp, timeoutMs = VM_TIMEOUT_MS): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = pattern.exec(this.output);
      if (m) return m;
      if (Date.now() > deadline || this.child.exitCode !== null) throw new Error(`no ${pattern} on the console:\n${this.output.slice(-1500)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Types more on the console. */
  type(text: string): void {
    this.child.stdin!.write(text);
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

