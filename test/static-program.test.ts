import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeCpio } from '../src/guest/cpio.js';
import { TSVM, defaultGuestOrNull, runConsole } from './guest-helpers.js';

/** The default guest boots in about a minute on the emulated CPU; 7 minutes on a host busy with other work. */
const BOOT_TIMEOUT_MS = 12 * 60_000;

/** A C program that goes through a bit of libc: printf with integers and doubles, qsort, string functions, setjmp/longjmp. */
const PROGRAM = String.raw`
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static jmp_buf env;
static volatile double scale = 0.125;

static int by_value(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void descend(volatile int depth) {
  if (depth == 0) longjmp(env, 42);
  descend(depth - 1);
}

int main(void) {
  printf("integers: %d %u %x %o %ld %lld %+d %05d|%-6d|\n", -12345, 4000000000u, 0xdeadbeefu, 8u, -7L, -1234567890123LL, 17, 42, 9);
  volatile double third = 1.0 / 3.0, big = 6.02214076e23, neg = -2.5;
  printf("doubles: %f %.10g %e %.3f %g %g\n", third, third, big, neg * scale, big * scale, 1e-5 / 4);
  int numbers[12];
  unsigned seed = 12345;
  for (int i = 0; i < 12; i++) {
    seed = seed * 1103515245u + 12345u;
    numbers[i] = (int)(seed >> 16) % 1000 - 500;
  }
  qsort(numbers, 12, sizeof numbers[0], by_value);
  printf("sorted:");
  for (int i = 0; i < 12; i++) printf(" %d", numbers[i]);
  printf("\n");
  const char *names[] = { "pear", "apple", "fig", "banana", "cherry" };
  qsort(names, 5, sizeof names[0], by_name);
  printf("names: %s %s %s %s %s\n", names[0], names[1], names[2], names[3], names[4]);
  char buf[64], out[64];
  strcpy(buf, "hello");
  strcat(buf, ", world");
  printf("strings: %s len=%zu comma@%d prefix=%d sub=%s last=%s\n", buf, strlen(buf), (int)(strchr(buf, ',') - buf),
         strncmp(buf, "help", 3) == 0, strstr(buf, "wor"), strrchr(buf, 'o'));
  memset(buf, 'x', 5);
  memmove(buf + 2, buf, 6);
  snprintf(out, sizeof out, "%.12s|%c", buf, buf[7]);
  printf("memory: %s\n", out);
  int r = setjmp(env);
  if (r == 0) {
    descend(10);
    printf("not reached\n");
  } else {
    printf("longjmp returned %d\n", r);
  }
  printf("strtol: %ld %lu %g\n", strtol("-0x7fff", NULL, 16), strtoul("4294967295", NULL, 10), strtod("2.5e-3", NULL));
  return 0;
}
`;

/** ENDBR32: CET start-up code from Debian's libgcc (a hint NOP on CPUs without CET). */
const ENDBR32 = Buffer.from([0xf3, 0x0f, 0x1e, 0xfb]);

/** The lines between BEGIN and END markers (the console echoes the commands too: markers are lines of their own). */
function between(output: string, begin: string, end: RegExp): string[] | null {
  const lines = output.split(/\r?\n/).map((l) => l.replace(/\r$/, ''));
  const start = lines.indexOf(begin);
  const stop = lines.findIndex((l, i) => i > start && end.test(l));
  return start < 0 || stop < 0 ? null : lines.slice(start + 1, stop + 1);
}

test('a static i386 program from Debian\'s gcc (glibc, CET start-up code) prints in the default guest what it prints under qemu-i386', { timeout: BOOT_TIMEOUT_MS + 60_000 }, async (t) => {
  if (spawnSync('which', ['qemu-i386']).status !== 0) return t.skip('qemu-i386 (qemu-user) is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-static-'));
  try {
    writeFileSync(join(dir, 'prog.c'), PROGRAM);
    const cc = spawnSync('gcc', ['-m32', '-static', '-O2', '-o', join(dir, 'prog'), join(dir, 'prog.c')], { encoding: 'utf8' });
    if (cc.error || cc.status !== 0) return t.skip(`gcc -m32 -static does not work here (gcc-multilib, libc6-dev-i386): ${cc.stderr ?? cc.error}`);
    const { guest, reason } = await defaultGuestOrNull();
    if (!guest) return t.skip(reason);
    const binary = readFileSync(join(dir, 'prog'));
    assert.ok(binary.includes(ENDBR32), 'the program has ENDBR32 instructions (the point of running it)');
    const expected = spawnSync('qemu-i386', [join(dir, 'prog')], { encoding: 'latin1' });
    assert.equal(expected.status, 0, expected.stderr);

    // The program goes in as a second cpio archive after the default initrd (Linux unpacks both, in order).
    const initrd = readFileSync(guest.initrd);
    const padding = new Uint8Array((4 - (initrd.length % 4)) % 4);
    const extra = writeCpio([{ kind: 'file', path: 'prog', data: binary, mode: 0o755 }]);
    writeFileSync(join(dir, 'initrd.img'), Buffer.concat([initrd, padding, extra]));

    const r = await runConsole(process.execPath, [TSVM, '-m', '200', '-kernel', guest.kernel, '-initrd', join(dir, 'initrd.img'),
      '-append', guest.cmdline, '-nographic'], 'echo BEGIN""-OUTPUT; /prog; echo END-OUTPUT status""=$?\npoweroff -f\n', 'tsvm-guest: ready', BOOT_TIMEOUT_MS);
    assert.equal(r.timedOut, false, `the guest did not finish: ${r.output.slice(-1500)}`);
    const got = between(r.output, 'BEGIN-OUTPUT', /^END-OUTPUT status=/);
    assert.ok(got, `no program output on the console: ${r.output.slice(-1500)}`);
    assert.deepEqual(got, [...expected.stdout.split('\n').filter((l) => l !== ''), 'END-OUTPUT status=0']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
