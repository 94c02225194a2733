import { spawnSync } from 'node:child_process';
import { type AddressInfo, type Server, type Socket, connect, createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { ensureDefaultGuest } from '../src/guest/default-guest.js';
import { ConsoleVm } from '../test/console-vm.js';
import { serveHttp } from '../test/host-net-servers.js';
import { nodeScriptCommand } from './boot-peers.js';

/**
 * User-mode networking benchmark: the default guest on an e1000 over `-netdev user` on tsvm and on QEMU (its
 * slirp) with the same software CPU kind (tcg), kernel and NIC. Guest-to-host TCP throughput (busybox nc
 * sending zeroes to a host sink), host-to-guest (busybox wget from a host HTTP server into /dev/null), and
 * connection setup through hostfwd (host connect until the first byte of a guest `nc -ll -e echo`).
 */
const BYTES = 8 << 20;
const CONNECTS = 10;
const TIMEOUT_MS = Number(process.env.TSVM_BENCH_TIMEOUT_MS ?? 15 * 60_000);

interface NetResult {
  guestToHostMBps: number;
  hostToGuestMBps: number;
  /** Median milliseconds from connect to the guest's first byte. */
  connectMs: number;
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

function freePort(): Promise<number> {
  const s = createServer();
  return listen(s).then((port) => new Promise((resolve) => s.close(() => resolve(port))));
}

/** A sink on the host: resolves with bytes/second of the first connection (accept to the guest's FIN). */
async function sink(): Promise<{ port: number; rate: Promise<number>; close: () => void }> {
  let resolveRate!: (r: number) => void;
  const rate = new Promise<number>((resolve) => (resolveRate = resolve));
  const server = createServer((s: Socket) => {
    const start = performance.now();
    let bytes = 0;
    s.on('data', (d) => (bytes += d.length));
    s.on('end', () => {
      resolveRate(bytes / ((performance.now() - start) / 1000));
      s.end();
    });
  });
  return { port: await listen(server), rate, close: () => server.close() };
}

async function firstByteMs(port: number): Promise<number> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    s.once('data', () => {
      resolve(performance.now() - start);
      s.destroy();
    });
    s.on('error', reject);
  });
}

async function measure(label: string, command: string, args: (fwdPort: number) => string[]): Promise<NetResult> {
  process.stderr.write(`${label}...\n`);
  const fwdPort = await freePort();
  const g2h = await sink();
  const payload = Buffer.alloc(BYTES, 0x5a);
  const http = await serveHttp(payload);
  // One step at a time: a line typed ahead would be read by the step before it.
  const vm = new ConsoleVm(command, args(fwdPort), '(nc -ll -p 7000 -e echo x >/dev/null 2>&1) & sleep 1; echo "fwd""-up"\n');
  try {
    await vm.waitFor(/^fwd-up/m, TIMEOUT_MS);
    const times: number[] = [];
    for (let i = 0; i < CONNECTS; i++) times.push(await firstByteMs(fwdPort));
    times.sort((a, b) => a - b);
    vm.type(`dd if=/dev/zero bs=65536 count=${BYTES / 65536} 2>/dev/null | nc 10.0.2.2 ${g2h.port}; echo "g2h""-done"\n`);
    const guestToHost = await g2h.rate;
    await vm.waitFor(/^g2h-done/m, TIMEOUT_MS);
    const start = performance.now();
    vm.type(`wget -q -O /dev/null http://10.0.2.2:${http.port}/f; echo "h2g""-done"\n`);
    await vm.waitFor(/^h2g-done/m, TIMEOUT_MS);
    const hostToGuest = BYTES / ((performance.now() - start) / 1000);
    vm.type('poweroff -f\n');
    return { guestToHostMBps: guestToHost / 2 ** 20, hostToGuestMBps: hostToGuest / 2 ** 20, connectMs: times[Math.floor(times.length / 2)] };
  } finally {
    vm.kill();
    g2h.close();
    await http.close();
  }
}

const guest = await ensureDefaultGuest({ onProgress: (l) => process.stderr.write(`tsvm-guest: ${l}\n`) });
const base = ['-m', '256', '-kernel', guest.kernel, '-initrd', guest.initrd, '-append', guest.cmdline, '-nographic'];
const netdev = (port: number) => ['-netdev', `user,id=n0,hostfwd=tcp:127.0.0.1:${port}-:7000`, '-device', 'e1000,netdev=n0'];
const [node, ...tsvmCli] = nodeScriptCommand(fileURLToPath(new URL('../src/cli/tsvm.js', import.meta.url)));
const rows: [string, NetResult | null][] = [];
rows.push(['tsvm -accel tcg', await measure('tsvm', node, (p) => [...tsvmCli, ...base, ...netdev(p)])]);
const haveQemu = spawnSync('which', ['qemu-system-i386']).status === 0;
rows.push(['qemu-system-i386 -accel tcg', haveQemu ? await measure('QEMU', 'qemu-system-i386', (p) => ['-accel', 'tcg', '-no-reboot', ...base, ...netdev(p)]) : null]);

const tsvm = rows[0][1]!;
const f = (n: number | undefined, digits = 2) => (n === undefined ? 'n/a' : n.toFixed(digits));
console.log(`\nUser-mode networking, default guest (${guest.kernelVersion}) on an e1000, ${BYTES >> 20} MiB each way; connect = host connect to the first byte of a guest nc through hostfwd (median of ${CONNECTS}):\n`);
console.log('| emulator | guest→host MiB/s | host→guest MiB/s | hostfwd connect ms | tsvm/this guest→host | tsvm/this host→guest | this/tsvm connect |');
console.log('|---|---|---|---|---|---|---|');
for (const [name, r] of rows) {
  console.log(`| ${name} | ${f(r?.guestToHostMBps)} | ${f(r?.hostToGuestMBps)} | ${f(r?.connectMs, 0)} | ${r ? f(tsvm.guestToHostMBps / r.guestToHostMBps) : 'n/a'} | ${r ? f(tsvm.hostToGuestMBps / r.hostToGuestMBps) : 'n/a'} | ${r ? f(r.connectMs / tsvm.connectMs) : 'n/a'} |`);
}
