/**
 * Key-to-path mapping of `mercury sync` (src/sync/paths.ts): whatever the key, an accepted path stays strictly inside
 * the directory and maps back to the same key; the unsafe shapes are refused with a reason.
 */
import assert from 'node:assert/strict';
import { relative, resolve, sep } from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { keyToPath, pathToKey } from '../src/sync/index.js';
import { assertProperty } from './support/seed.js';

const PREFIX = Buffer.from('app/');
const DIR = '/srv/conf';

describe('sync paths', () => {
  test('sync paths: an accepted key maps inside the directory and back to itself', () => {
    const segment = fc.oneof(fc.constantFrom('.', '..', '', '...', '.mercury-sync-x', 'a', 'b.json', '\u0000', 'é'), fc.string({ maxLength: 6 }));
    const key = fc.oneof(
      fc.array(segment, { maxLength: 5 }).map((segments) => Buffer.concat([PREFIX, Buffer.from(segments.join('/'))])),
      fc.uint8Array({ maxLength: 20 }).map((bytes) => Buffer.concat([PREFIX, Buffer.from(bytes)])),
    );
    assertProperty(
      fc.property(key, (bytes) => {
        const mapped = keyToPath(bytes, PREFIX);
        if (!mapped.ok) return;
        const inside = relative(DIR, resolve(DIR, mapped.path));
        assert.ok(inside !== '' && inside !== '..' && !inside.startsWith(`..${sep}`) && !inside.startsWith(sep), `${JSON.stringify(mapped.path)} leaves ${DIR}`);
        assert.equal(inside.split(sep).join('/'), mapped.path, 'the path is already normal');
        assert.deepEqual(pathToKey(mapped.path, PREFIX), bytes);
      }),
    );
  });

  test('sync paths: the unsafe shapes are refused with a reason', () => {
    const cases: [string | Buffer, RegExp][] = [
      ['app/', /the prefix itself/],
      ['app/../etc/passwd', /"\.\." segment/],
      ['app/a/./b', /"\." segment/],
      ['app//abs', /absolute path/],
      ['app/a//b', /empty path segment/],
      ['app/a/', /empty path segment/],
      ['app/a\u0000b', /NUL/],
      [Buffer.concat([PREFIX, Buffer.from([0xff, 0xfe])]), /not valid UTF-8/],
      ['app/.mercury-sync-state.json', /keeps for itself/],
      // The state and lock files on a case-insensitive file system (audit, 2026-12-06: a node could overwrite them).
      ['app/.MERCURY-SYNC-state.json', /keeps for itself/],
      ['app/d/.Mercury-Sync-tmp-0', /keeps for itself/],
      ['app/.mercury-\u017Fync-lock', /keeps for itself/],
      [`app/${'x'.repeat(256)}`, /over 255 bytes/],
    ];
    for (const [key, reason] of cases) {
      const mapped = keyToPath(Buffer.isBuffer(key) ? key : Buffer.from(key), PREFIX);
      assert.ok(!mapped.ok && reason.test(mapped.reason), `${JSON.stringify(key.toString())}: ${JSON.stringify(mapped)}`);
    }
    assert.deepEqual(keyToPath(Buffer.from('app/db/primary.json'), PREFIX), { ok: true, path: 'db/primary.json' });
  });
});
