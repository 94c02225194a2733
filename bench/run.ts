/** `npm run bench`: every benchmark, one after the other, each printing its own table. */
await import('./boot.js');
await import('./img.js');
await import('./firmware.js');
await import('./virtio-blk.js');
await import('./net-user.js');
