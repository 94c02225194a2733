#!/usr/bin/env node
import { TsvmError } from '../base/errors.js';
import { ensureDefaultGuest, findDefaultGuest } from '../guest/default-guest.js';
import { buildInstallerCd } from '../guest/installer/installer-cd.js';
import { runMain } from './main-guard.js';

const USAGE = `usage: tsvm-guest build [--rebuild]     build the default guest (Debian i386 kernel + busybox) into the cache
       tsvm-guest info [--json]         print where the default guest is and how it boots
       tsvm-guest build-installer [--rebuild]
                                        build the installer CD (GRUB + installer initramfs) into the cache
`;

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  const progress = (line: string) => process.stderr.write(`tsvm-guest: ${line}\n`);
  switch (command) {
    case 'build': {
      for (const a of rest) if (a !== '--rebuild') throw new TsvmError(`build: unknown option ${a}`);
      const info = await ensureDefaultGuest({ onProgress: progress, rebuild: rest.includes('--rebuild') });
      process.stdout.write(`${info.kernel}\n${info.initrd}\n`);
      return 0;
    }
    case 'info': {
      for (const a of rest) if (a !== '--json') throw new TsvmError(`info: unknown option ${a}`);
      const info = findDefaultGuest();
      if (!info) throw new TsvmError('the default guest is not built yet (run: tsvm-guest build)');
      if (rest.includes('--json')) process.stdout.write(JSON.stringify(info, null, 2) + '\n');
      else process.stdout.write(`kernel:  ${info.kernel}\ninitrd:  ${info.initrd}\ncmdline: ${info.cmdline}\nversion: ${info.kernelVersion}\n`);
      return 0;
    }
    case 'build-installer': {
      for (const a of rest) if (a !== '--rebuild') throw new TsvmError(`build-installer: unknown option ${a}`);
      const cd = await buildInstallerCd({ onProgress: progress, rebuild: rest.includes('--rebuild') });
      process.stdout.write(`${cd.iso}\n`);
      return 0;
    }
    case '-h': case '--help': case undefined:
      process.stdout.write(USAGE);
      return command === undefined ? 1 : 0;
    default:
      throw new TsvmError(`unknown command '${command}' (try --help)`);
  }
}

runMain('tsvm-guest', main);
