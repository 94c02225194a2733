import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createImage } from '../src/block/index.js';
import { writeCpio } from '../src/guest/cpio.js';
import { ensureDefaultGuest } from '../src/guest/default-guest.js';
import { nodeScriptCommand } from './boot-peers.js';

/**
 * Disk benchmark inside the default guest: a small static program does sequential writes and reads of 1 MiB
 * blocks and random 4 KiB reads, all with O_DIRECT (the guest's page cache out of the way), on a virtio-blk and
 * an IDE disk, raw and qcow2, under tsvm and QEMU's software CPU with the same kernel, initramfs, image and
 * cache mode (writeback).
 */
const TIMEOUT_MS = Number(process.env.TSVM_BENCH_TIMEOUT_MS ?? 15 * 60_000);
const DISK_BYTES = 96 * 2 ** 20;
const SEQ_MIB = 32;
const RANDOM_SECONDS = 5;

const PROGRAM = String.raw`
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
  int mib = atoi(argv[2]), seconds = atoi(argv[3]);
  int fd = open(argv[1], O_RDWR | O_DIRECT);
  if (fd < 0) { perror("open"); return 1; }
  char *buf; if (posix_memalign((void **)&buf, 4096, 1 << 20)) return 1;
  for (int i = 0; i < (1 << 20); i++) buf[i] = (char)(i * 7);
  double t = now();
  for (int i = 0; i < mib; i++) if (pwrite(fd, buf, 1 << 20, (off_t)i << 20) != 1 << 20) { perror("pwrite"); return 1; }
  fdatasync(fd);
  printf("seqwrite %.2f\n", mib / (now() - t));
  t = now();
  for (int i = 0; i < mib; i++) if (pread(fd, buf, 1 << 20, (off_t)i << 20) != 1 << 20) { perror("pread"); return 1; }
  printf("seqread %.2f\n", mib / (now() - t));
  unsigned seed = 1; long n = 0; t = now();
  while (now() - t < seconds) {
    seed = seed * 1103515245 + 12345;
    if (pread(fd, buf, 4096, (off_t)((seed >> 8) % (mib * 256)) << 12) != 4096) { perror("pread"); return 1; }
    n++;
  }
  printf("randread %.0f\n", n / (now() - t));
  printf("bench-done\n");
  return 0;
}
`;

interface Result { seqwrite: number; seqread: number; randread: number }

/** Boots, runs the program on `device`, powers off; the numbers it printed. */
function run(command: string, args: string[], device: string): Promise<Result | string> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    let sent = false;
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    const onData = (d: Buffer) => {
      output += d.toString('latin1');
      if (!sent && output.includes('tsvm-guest: ready')) {
        sent = true;
        child.stdin.write(`/bench ${device} ${SEQ_MIB} ${RANDOM_SECONDS}; poweroff -f\n`);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.stdin.on('error', () => {});
    child.on('close', () => {
      clearTimeout(timer);
      const value = (name: string) => Number(new RegExp(`^${name} ([0-9.]+)`, 'm').exec(output.replace(/\r/g, ''))?.[1]);
      resolve(/^bench-done/m.test(output.replace(/\r/g, ''))
        ? { seqwrite: value('seqwrite'), seqread: value('seqread'), randread: value('randread') }
        : `failed: ${output.slice(-300).replace(/\s+/g, ' ')}`);
    });
  });
}

const guest = await ensureDefaultGuest({ onProgress: (l) => process.stderr.write(`tsvm-guest: ${l}\n`) });
const dir = mkdtempSync(join(tmpdir(), 'tsvm-bench-blk-'));
try {
  writeFileSync(join(dir, 'bench.c'), PROGRAM);
  const cc = spawnSync('gcc', ['-m32', '-static', '-O2', '-o', join(dir, 'bench'), join(dir, 'bench.c')], { encoding: 'utf8' });
  const haveQemu = spawnSync('which', ['qemu-system-i386']).status === 0;
  if (cc.status !== 0) {
    console.log(`\nvirtio-blk benchmark skipped: gcc -m32 -static does not work here (${cc.stderr?.trim().split('\n').pop() ?? ''})`);
  } else {
    const initrd = join(dir, 'initrd.img');
    writeFileSync(initrd, Buffer.concat([readFileSync(guest.initrd), writeCpio([{ kind: 'file', path: 'bench', data: readFileSync(join(dir, 'bench')), mode: 0o755 }])]));
    const [node, ...tsvmCli] = nodeScriptCommand(fileURLToPath(new URL('../src/cli/tsvm.js', import.meta.url)));
    const rows: string[] = [];
    for (const format of ['raw', 'qcow2'] as const) {
      for (const bus of ['virtio', 'ide'] as const) {
        const results: Record<string, Result | string> = {};
        for (const emulator of haveQemu ? ['tsvm', 'qemu'] : ['tsvm']) {
          const image = join(dir, `disk.${format}`);
          rmSync(image, { force: true });
          await createImage(image, format, DISK_BYTES);
          const common = ['-m', '256', '-kernel', guest.kernel, '-initrd', initrd, '-append', guest.cmdline, '-nographic',
            '-drive', `file=${image},format=${format},if=${bus},cache=writeback`];
          process.stderr.write(`${emulator}: ${format} on ${bus}...\n`);
          results[emulator] = emulator === 'tsvm'
            ? await run(node, [...tsvmCli, ...common], bus === 'virtio' ? '/dev/vda' : '/dev/sda')
            : await run('qemu-system-i386', ['-accel', 'tcg', ...common], bus === 'virtio' ? '/dev/vda' : '/dev/sda');
        }
        const cell = (r: Result | string | undefined, k: keyof Result) => (r === undefined ? 'n/a' : typeof r === 'string' ? r.slice(0, 60) : r[k].toFixed(k === 'randread' ? 0 : 1));
        const ratio = (k: keyof Result) => {
          const a = results.tsvm, b = results.qemu;
          return typeof a === 'object' && typeof b === 'object' ? (a[k] / b[k]).toFixed(2) + 'x' : 'n/a';
        };
        for (const k of ['seqwrite', 'seqread', 'randread'] as const) {
          rows.push(`| ${format} | ${bus} | ${k === 'randread' ? '4 KiB random read (IOPS)' : `${k === 'seqwrite' ? 'sequential write' : 'sequential read'} (MB/s)`} | ${cell(results.tsvm, k)} | ${cell(results.qemu, k)} | ${ratio(k)} |`);
        }
      }
    }
    console.log(`\nDisk I/O in the default guest (O_DIRECT, ${SEQ_MIB} MiB sequential in 1 MiB blocks, ${RANDOM_SECONDS} s of 4 KiB random reads; cache=writeback):\n`);
    console.log('| format | bus | test | tsvm | QEMU (tcg) | tsvm / QEMU |');
    console.log('|---|---|---|---|---|---|');
    for (const r of rows) console.log(r);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
