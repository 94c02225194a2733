import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createImage, openImage, probeFormat } from '../block-driver.js';
import { fill, hasQemuImg, hasQemuIo, pattern, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../test-helpers.js';

const skip = !hasQemuImg || !hasQemuIo ? 'qemu-img/qemu-io not installed' : false;

test('openImage: probing and a mixed raw <- qcow <- qcow2 chain opened read-only below the top', { skip }, async () => {
  const t = tmpDir();
  try {
    const base = t.path('base.raw');
    const data = pattern(2 << 20, 5);
    writeFileSync(base, data);
    await createImage(t.path('mid.qcow'), 'qcow', undefined, { backingFile: 'base.raw', backingFormat: 'raw' });
    const mid = await openImage(t.path('mid.qcow'));
    await mid.write(512, fill(512, 0x42));
    await mid.close();
    data.fill(0x42, 512, 1024);
    await createImage(t.path('top.qcow2'), 'qcow2', undefined, { backingFile: 'mid.qcow', backingFormat: 'qcow' });
    assert.equal(await probeFormat(t.path('base.raw')), 'raw');
    assert.equal(await probeFormat(t.path('mid.qcow')), 'qcow');
    assert.equal(await probeFormat(t.path('top.qcow2')), 'qcow2');
    const top = await openImage(t.path('top.qcow2'));
    assert.equal(top.virtualSize, 2 << 20);
    assert.deepEqual(await top.read(0, 2 << 20), data);
    await top.write(0, fill(100, 1));
    data.fill(1, 0, 100);
    assert.deepEqual(await top.read(0, 2 << 20), data);
    await top.close();
    qemuIo(t.path('top.qcow2'), ['read -P 1 0 100', 'read -P 0x42 512 512']);
    qemuImg('convert', '-O', 'raw', t.path('top.qcow2'), t.path('out.raw'));
    assert.deepEqual(new Uint8Array(readFileSync(t.path('out.raw'))), data);
  } finally {
    t.cleanup();
  }
});

test('openImage: errors are one-line TsvmErrors', async () => {
  const t = tmpDir();
  try {
    await assert.rejects(openImage(t.path('missing.qcow2')), { name: 'TsvmError' });
    const bad = t.path('bad.qcow2');
    const b = Buffer.alloc(4096);
    b.writeUInt32BE(0x514649fb, 0);
    b.writeUInt32BE(3, 4);
    b.writeUInt32BE(40, 20); // cluster_bits 40
    writeFileSync(bad, b);
    await assert.rejects(openImage(bad), (e: Error) => e.name === 'TsvmError' && !e.message.includes('\n'));
    await assert.rejects(createImage(t.path('x.qcow2'), 'qcow2', 1 << 20, { clusterSize: 1000 }), { name: 'TsvmError' });
  } finally {
    t.cleanup();
  }
});

test('qcow2: killing a writer mid-way leaves at most leaked clusters', { skip }, async () => {
  const t = tmpDir();
  try {
    const p = t.path('k.qcow2');
    await createImage(p, 'qcow2', 64 << 20, { clusterSize: 4096 });
    const script = `
      import { openImage } from ${JSON.stringify(pathToFileURL(fileURLToPath(new URL('../block-driver.js', import.meta.url))).href)};
      const img = await openImage(${JSON.stringify(p)});
      let i = 0;
      for (;;) {
        const off = ((i * 7919) % 16000) * 4096 + (i % 3) * 100;
        await img.write(off, new Uint8Array(5000).fill(i & 255));
        if (i % 5 === 0) await img.writeZeroes(((i * 31) % 16000) * 4096, 8192);
        if (i++ === 200) console.log('ready');
      }
    `;
    const viaTsx = import.meta.url.endsWith('.ts') ? ['--import', 'tsx'] : [];
    const child = spawn(process.execPath, [...viaTsx, '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((res, rej) => {
      child.stdout.on('data', () => res());
      child.on('exit', (code) => rej(new Error(`writer exited ${code}`)));
    });
    await new Promise((r) => setTimeout(r, 200));
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    const chk = qemuImgStatus('check', p);
    assert.ok(chk.status === 0 || chk.status === 3, chk.out);
  } finally {
    t.cleanup();
  }
});
