import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HAVE_QEMU, TSVM, defaultGuestOrNull } from './guest-helpers.js';
import { ConsoleVm as Vm, VM_TIMEOUT_MS } from './console-vm.js';

const HAVE_TCPDUMP = spawnSync('which', ['tcpdump']).status === 0;
/**
 * The server side: a file of random bytes served by busybox httpd on 10.0.0.2; it prints the file's md5sum.
 * The `echo` markers are split so that the echoed typing never matches them.
 */
const SERVER = `ip addr add 10.0.0.2/24 dev eth0; ip link set eth0 up
mkdir -p /www; dd if=/dev/urandom of=/www/f bs=1024 count=512 2>/dev/null
echo "srv-md5 $(md5sum < /www/f)"; httpd -h /www -p 80; echo "srv-""up"
`;
/** The client side on 10.0.0.1: fetches the file (retrying until the server is up) and prints its md5sum. */
const CLIENT = `ip addr add 10.0.0.1/24 dev eth0; ip link set eth0 up
until wget -q -O /tmp/f http://10.0.0.2/f; do sleep 1; done; echo "cli-md5 $(md5sum < /tmp/f)"
poweroff -f
`;

function tsvmArgs(guest: { kernel: string; initrd: string; cmdline: string }, net: string[]): string[] {
  return ['--v8-pool-size=1', TSVM, '-m', '128', '-kernel', guest.kernel, '-initrd', guest.initrd, '-append', guest.cmdline, '-nographic', ...net];
}

async function exchange(server: Vm, client: Vm): Promise<void> {
  try {
    const sent = (await server.waitFor(/^srv-md5 ([0-9a-f]{32})/m))[1];
    const received = (await client.waitFor(/^cli-md5 ([0-9a-f]{32})/m))[1];
    assert.equal(received, sent, 'the file arrived whole');
    assert.equal(await client.closed, 0, client.output.slice(-500));
  } finally {
    server.kill();
    client.kill();
  }
}

test('socket netdev: two tsvm VMs exchange a file over listen=/connect=; the filter-dump pcap reads in tcpdump', async (t) => {
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-net-'));
  try {
    const pcap = join(dir, 'wire.pcap');
    const port = 20000 + (process.pid % 20000);
    const server = new Vm(process.execPath, tsvmArgs(guest, ['-netdev', `socket,id=n0,listen=127.0.0.1:${port}`,
      '-device', 'e1000,netdev=n0,mac=52:54:00:00:00:02', '-object', `filter-dump,id=d0,netdev=n0,file=${pcap}`]), SERVER);
    // The listener is up once the process has started the machine; connect= fails at once otherwise.
    await new Promise((r) => setTimeout(r, 3000));
    const client = new Vm(process.execPath, tsvmArgs(guest, ['-nic', `socket,connect=127.0.0.1:${port},mac=52:54:00:00:00:01`]), CLIENT);
    await exchange(server, client);
    await server.closed;
    assert.ok(existsSync(pcap));
    if (!HAVE_TCPDUMP) return t.skip('tcpdump is not installed: the pcap file was not read back');
    const r = spawnSync('tcpdump', ['-n', '-r', pcap], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /ARP, Request who-has 10\.0\.0\.2/);
    assert.match(r.stdout, /10\.0\.0\.2\.80 > 10\.0\.0\.1\.\d+: Flags/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('socket netdev: a tsvm VM and a QEMU VM exchange a file over one wire', async (t) => {
  if (!HAVE_QEMU) return t.skip('qemu-system-i386 is not installed');
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  const port = 20000 + ((process.pid + 1) % 20000);
  const server = new Vm(process.execPath, tsvmArgs(guest, ['-netdev', `socket,id=n0,listen=127.0.0.1:${port}`, '-device', 'e1000,netdev=n0,mac=52:54:00:00:00:02']), SERVER);
  await new Promise((r) => setTimeout(r, 3000));
  const client = new Vm('qemu-system-i386', ['-accel', 'tcg', '-m', '128', '-kernel', guest.kernel, '-initrd', guest.initrd, '-append', guest.cmdline,
    '-nographic', '-no-reboot', '-netdev', `socket,id=n0,connect=127.0.0.1:${port}`, '-device', 'e1000,netdev=n0,mac=52:54:00:00:00:01'], CLIENT);
  await exchange(server, client);
});
