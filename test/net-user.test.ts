import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { Machine, defaultMachineConfig } from '../src/api/machine.js';
import { defaultUserNetOptions, type UserNetOptions } from '../src/net/user/user-net-options.js';
import { defaultGuestOrNull } from './guest-helpers.js';
import { VM_TIMEOUT_MS } from './console-vm.js';
import { serveDns, serveHttp, serveTftp } from './host-net-servers.js';

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

/** The default guest on an e1000 over user-mode networking, in this process, its console collected. */
async function bootGuest(user: UserNetOptions): Promise<{ vm: Machine; output: () => string; type: (s: string) => void; waitFor: (p: RegExp) => Promise<RegExpExecArray> } | null> {
  const { guest } = await defaultGuestOrNull();
  if (!guest) return null;
  const vm = await Machine.create({
    ...defaultMachineConfig(),
    memoryBytes: 128 * 2 ** 20,
    kernel: guest.kernel,
    initrd: guest.initrd,
    append: guest.cmdline,
    serials: [{ kind: 'api' }],
    netdevs: [{ kind: 'user', id: 'n0', user }],
    nics: [{ model: 'e1000', netdev: 'n0' }],
  });
  let output = '';
  vm.console!.on('data', (d: Buffer) => (output += d.toString('latin1')));
  vm.start();
  const waitFor = async (pattern: RegExp) => {
    const deadline = Date.now() + VM_TIMEOUT_MS;
    for (;;) {
      const m = pattern.exec(output);
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`no ${pattern} on the console:\n${output.slice(-1500)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  return { vm, output: () => output, type: (s) => vm.console!.write(s), waitFor };
}

function fetchOnce(port: number, request: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = connect(port, '127.0.0.1', () => s.write(request));
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
}

test('user-mode networking, default guest: DHCP, DNS through the forwarder, wget from the host, TFTP, hostfwd to httpd and nc', async (t) => {
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  const file = randomBytes(384 * 1024);
  const tftpFile = randomBytes(100 * 1024 + 123);
  const http = await serveHttp(file);
  const tftp = await serveTftp(tftpFile);
  const dns = await serveDns({ 'files.tsvm.test': '10.0.2.2' });
  const g = (await bootGuest({ ...defaultUserNetOptions(), hostname: 'tsvmguest', dnsUpstream: { address: '127.0.0.1', port: dns.port } }))!;
  try {
    await g.waitFor(/tsvm-guest: ready/);
    assert.match(g.output(), /tsvm-guest: eth0 has 10\.0\.2\.15/);
    // Markers are split in the typed script so that the echoed typing never matches them.
    g.type(
      [
        'cat /etc/resolv.conf; hostname',
        `wget -q -O /tmp/f http://files.tsvm.test:${http.port}/f && echo "wget""-md5 $(md5sum < /tmp/f)"`,
        `tftp -g -r t -l /tmp/t 10.0.2.2 ${tftp.port} && echo "tftp""-md5 $(md5sum < /tmp/t)"`,
        'mkdir -p /www; dd if=/dev/urandom of=/www/g bs=1024 count=200 2>/dev/null; echo "srv""-md5 $(md5sum < /www/g)"',
        'httpd -h /www -p 80; (echo from-guest-nc | nc -l -p 7000 >/dev/null) & sleep 1; echo "srv""-up"',
        '',
      ].join('\n'),
    );
    assert.equal((await g.waitFor(/^wget-md5 ([0-9a-f]{32})/m))[1], md5(file), 'wget through the DNS name, byte-exact');
    assert.match(g.output(), /nameserver 10\.0\.2\.3/);
    assert.equal((await g.waitFor(/^tftp-md5 ([0-9a-f]{32})/m))[1], md5(tftpFile), 'TFTP (UDP out, answers from a new host port)');
    const guestMd5 = (await g.waitFor(/^srv-md5 ([0-9a-f]{32})/m))[1];
    await g.waitFor(/^srv-up/m);
    const httpPort = await g.vm.forward({ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 0, guestPort: 80 });
    const response = await fetchOnce(httpPort, 'GET /g HTTP/1.0\r\n\r\n');
    const body = response.subarray(response.indexOf('\r\n\r\n') + 4);
    assert.equal(md5(body), guestMd5, 'hostfwd to the guest httpd, byte-exact');
    const ncPort = await g.vm.forward({ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 0, guestPort: 7000 });
    assert.equal((await fetchOnce(ncPort, '')).toString(), 'from-guest-nc\n');
  } finally {
    await g.vm.quit();
    await Promise.all([http.close(), tftp.close(), dns.close()]);
  }
});

test('user-mode networking, default guest: restrict=on blocks the guest connecting out, forwarded ports still work', async (t) => {
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  const http = await serveHttp(Buffer.from('not for a restricted guest'));
  const g = (await bootGuest({ ...defaultUserNetOptions(), restrict: true }))!;
  try {
    await g.waitFor(/tsvm-guest: ready/);
    assert.match(g.output(), /tsvm-guest: eth0 has 10\.0\.2\.15/, 'DHCP still works');
    g.type(
      [
        `wget -q -T 5 -O /tmp/f http://10.0.2.2:${http.port}/f; echo "wget""-status $?"`,
        'ping -c 1 -W 5 10.0.2.2 >/dev/null; echo "ping""-status $?"',
        '(echo inside | nc -l -p 7000 >/dev/null) & sleep 1; echo "srv""-up"',
        '',
      ].join('\n'),
    );
    assert.notEqual((await g.waitFor(/^wget-status (\d+)/m))[1], '0', 'the guest cannot reach the host');
    assert.equal((await g.waitFor(/^ping-status (\d+)/m))[1], '0', 'the gateway still answers pings');
    await g.waitFor(/^srv-up/m);
    const port = await g.vm.forward({ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 0, guestPort: 7000 });
    assert.equal((await fetchOnce(port, '')).toString(), 'inside\n');
  } finally {
    await g.vm.quit();
    await http.close();
  }
});
