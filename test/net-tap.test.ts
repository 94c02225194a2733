import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConsoleVm } from './console-vm.js';
import { TSVM, defaultGuestOrNull } from './guest-helpers.js';

/** Why the test cannot run here, or null. It needs root, iproute2 and /dev/net/tun, socat and busybox (udhcpd, wget). */
function missing(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces and tap devices)';
  if (!existsSync('/dev/net/tun')) return 'no /dev/net/tun';
  for (const tool of ['ip', 'socat', 'busybox']) if (spawnSync('which', [tool]).status !== 0) return `${tool} is not installed`;
  if (!spawnSync('busybox', ['--list'], { encoding: 'utf8' }).stdout.split('\n').includes('udhcpd')) return 'busybox has no udhcpd';
  return null;
}

function sh(ns: string, command: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c', command], { encoding: 'utf8', timeout: 30_000 });
}

test('tap netdev in a network namespace: the e1000 gets a DHCP lease from udhcpd, and the host fetches a page from the guest', async (t) => {
  const why = missing();
  if (why) return t.skip(why);
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  const ns = `tsvm-net-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-tap-'));
  const made = spawnSync('ip', ['netns', 'add', ns]);
  assert.equal(made.status, 0, String(made.stderr));
  try {
    writeFileSync(join(dir, 'udhcpd.conf'), `start 10.1.0.50\nend 10.1.0.60\ninterface tap0\nlease_file ${dir}/leases\nopt subnet 255.255.255.0\nopt router 10.1.0.1\n`);
    writeFileSync(join(dir, 'leases'), '');
    const setup = sh(ns, `ip link set lo up && ip tuntap add dev tap0 mode tap && ip addr add 10.1.0.1/24 dev tap0 && ip link set tap0 up
      && busybox udhcpd ${dir}/udhcpd.conf`);
    assert.equal(setup.status, 0, setup.stderr);
    // The guest serves a page; once it says so, the host side (in the namespace) fetches it over the tap device.
    const script = 'mkdir -p /www; echo hello-from-the-guest > /www/index.html; httpd -h /www -p 80; echo "httpd-""up"\n';
    const vm = new ConsoleVm('ip', ['netns', 'exec', ns, process.execPath, '--v8-pool-size=1', TSVM, '-m', '128', '-kernel', guest.kernel,
      '-initrd', guest.initrd, '-append', guest.cmdline, '-nographic', '-netdev', 'tap,id=t0,ifname=tap0,script=no,downscript=no', '-device', 'e1000,netdev=t0'], script);
    try {
      const ip = (await vm.waitFor(/tsvm-guest: eth0 has (10\.1\.0\.\d+)/))[1];
      assert.match(ip, /^10\.1\.0\.(5\d|60)$/, 'a lease from udhcpd');
      await vm.waitFor(/^httpd-up/m);
      const page = sh(ns, `busybox wget -q -T 20 -O - http://${ip}/`);
      assert.equal(page.stdout.trim(), 'hello-from-the-guest', page.stderr);
    } finally {
      vm.kill();
      await vm.closed;
    }
  } finally {
    // udhcpd (started by this test) is the only process left in the namespace.
    spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).forEach((pid) => spawnSync('kill', [pid]));
    spawnSync('ip', ['netns', 'del', ns]);
    rmSync(dir, { recursive: true, force: true });
  }
});
