import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Machine, defaultMachineConfig, type MachineConfig } from '../src/api/index.js';
import { DEFAULT_BIOS } from '../src/boot/firmware.js';
import { RfbClient } from '../src/ui/vnc/testing/rfb-client.js';

const GRUB_RESCUE_CD = '/usr/lib/grub-rescue/grub-rescue-cdrom.iso';
const GRUB_MENU = /GNU GRUB\s+version 2\.\d+/;

function grubCdConfig(): MachineConfig {
  const config = defaultMachineConfig();
  config.memoryBytes = 256 * 2 ** 20;
  config.serials = [{ kind: 'none' }];
  config.drives = [{ file: GRUB_RESCUE_CD, interface: 'ide', media: 'cdrom', index: 2, readOnly: true }];
  config.boot.order = 'd';
  return config;
}

async function waitForScreen(vm: Machine, pattern: RegExp, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const screen = vm.textScreen().join('\n');
    if (pattern.test(screen)) return screen;
    if (Date.now() > deadline) assert.fail(`the screen did not show ${pattern} in ${timeoutMs} ms:\n${screen}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('Debian\'s GRUB rescue CD boots from the CD-ROM (-boot d) to GRUB, whose command line takes keys', async (t) => {
  if (!existsSync(GRUB_RESCUE_CD) || !existsSync(DEFAULT_BIOS)) return t.skip('needs grub-rescue-pc and seabios');
  const vm = await Machine.create(grubCdConfig());
  vm.start();
  try {
    const menu = await waitForScreen(vm, /Press enter to boot the selected OS/, 60_000);
    assert.match(menu, GRUB_MENU);
    // `c` opens GRUB's command line (set 1 make and break codes through the i8042).
    vm.sendKeys([0x2e, 0xae]);
    await waitForScreen(vm, /^grub> ?$/m, 20_000);
    for (const code of [0x26, 0x1f, 0x1c]) vm.sendKeys([code, code | 0x80]); // "ls\n": GRUB lists its devices
    const after = await waitForScreen(vm, /^\(cd\)/m, 20_000);
    assert.match(after, /grub> ls/);
  } finally {
    await vm.quit();
  }
});

test('a VNC client sees the GRUB screen: 720x400, text where GRUB\'s title is, a blank top row; vncsnapshot takes it', async (t) => {
  if (!existsSync(GRUB_RESCUE_CD) || !existsSync(DEFAULT_BIOS)) return t.skip('needs grub-rescue-pc and seabios');
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-vnc-'));
  const display = 100 + (process.pid % 800);
  const config = grubCdConfig();
  config.vnc = `127.0.0.1:${display}`;
  const vm = await Machine.create(config);
  vm.start();
  try {
    await waitForScreen(vm, /Press enter to boot the selected OS/, 60_000);
    const client = await RfbClient.open(5900 + display);
    const { width, height } = await client.handshake();
    assert.deepEqual([width, height], [720, 400], '80x25 text with 9x16 cells');
    client.setEncodings([0]);
    client.request(false, 0, 0, width, height);
    const picture = new Uint32Array(width * height);
    for (const r of await client.update()) {
      for (let y = 0; y < r.h; y++) for (let x = 0; x < r.w; x++) picture[(r.y + y) * width + r.x + x] = r.data.readUInt32LE((y * r.w + x) * 4) & 0xffffff;
    }
    client.close();
    // Row 1 holds "GNU GRUB  version ...": its cells are drawn in more than one colour; the blank row 0 is not.
    const row = (cellRow: number) => new Set(picture.subarray(cellRow * 16 * width, (cellRow + 1) * 16 * width));
    const titleRow = vm.textScreen().findIndex((l) => GRUB_MENU.test(l));
    assert.ok(titleRow >= 0);
    assert.ok(row(titleRow).size >= 2, 'the title row shows text');
    assert.equal(row(0).size, 1, 'the top row is blank');
    if (spawnSync('vncsnapshot', ['-h'], { stdio: 'ignore' }).error) return t.skip('vncsnapshot is not installed');
    const shot = join(dir, 'grub.jpg');
    const code = await new Promise<number | null>((resolve) => {
      const p = spawn('vncsnapshot', ['-quiet', `127.0.0.1::${5900 + display}`, shot], { stdio: 'ignore' });
      const timer = setTimeout(() => p.kill('SIGKILL'), 20_000);
      p.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    assert.equal(code, 0);
    const jpg = readFileSync(shot);
    let o = 2;
    while (o < jpg.length && !(jpg[o] === 0xff && (jpg[o + 1] === 0xc0 || jpg[o + 1] === 0xc2))) o += 2 + jpg.readUInt16BE(o + 2);
    assert.deepEqual([jpg.readUInt16BE(o + 7), jpg.readUInt16BE(o + 5)], [720, 400]);
  } finally {
    await vm.quit();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('-boot menu=on: SeaBIOS offers its boot menu on the screen', async (t) => {
  if (!existsSync(GRUB_RESCUE_CD) || !existsSync(DEFAULT_BIOS)) return t.skip('needs grub-rescue-pc and seabios');
  const config = grubCdConfig();
  config.boot = { order: 'd', menu: true };
  const vm = await Machine.create(config);
  vm.start();
  try {
    await waitForScreen(vm, /Press ESC for boot menu/, 30_000);
    vm.sendKeys([0x01, 0x81]); // Esc
    // The menu is printed a character at a time: wait for its whole entry line.
    const menu = await waitForScreen(vm, /DVD\/CD \[ata1-0: QEMU DVD-ROM ATAPI-4 DVD\/CD\]/, 20_000);
    assert.match(menu, /Select boot device:/);
  } finally {
    await vm.quit();
  }
});
