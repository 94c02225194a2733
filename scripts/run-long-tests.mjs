#!/usr/bin/env node
// The long tests (`npm run test:long`): the guest-correctness tests of `npm test`, repeated more. Debian's
// installer boots TSVM_DI_BOOTS times (10 unless set; npm test boots it 3 times).
import { spawnSync } from 'node:child_process';

const env = { ...process.env, TSVM_DI_BOOTS: process.env.TSVM_DI_BOOTS ?? '10' };
const r = spawnSync(process.execPath, ['scripts/run-tests.mjs', 'debian-installer', 'icount'], { stdio: 'inherit', env });
process.exit(r.status ?? 1);
