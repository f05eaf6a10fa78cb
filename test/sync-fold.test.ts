/**
 * Names a case- or normalisation-insensitive DIR takes for one (src/sync/fold.ts): which spellings clash, and the
 * probe of DIR's file system. A folding file system cannot be mounted here, so the folding is given: test/sync-cli.test.ts
 * runs sync with it injected, and on this (case-sensitive) file system.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { probeNameFolding } from '../src/sync/files.js';
import { FoldedPaths, nameFolding } from '../src/sync/fold.js';

describe('sync fold', () => {
  test('sync fold: on a DIR that folds case, another spelling of a held file or of a directory on the way clashes; the spelling sync wrote does not', () => {
    const paths = new FoldedPaths(nameFolding(true, false)!);
    paths.add('app/A');
    paths.add('conf/x');
    assert.equal(paths.clash('app/A'), undefined, 'a key\'s own file');
    assert.deepEqual(paths.clash('app/a'), { held: 'app/A', directory: false });
    assert.deepEqual(paths.clash('CONF/y'), { held: 'conf', directory: true }, 'a directory on the way');
    assert.deepEqual(paths.clash('Conf'), { held: 'conf', directory: true }, 'a directory with keys under it');
    assert.equal(paths.clash('conf/y'), undefined);
    assert.ok(paths.holds('app/A'));
    assert.ok(!paths.holds('app/a'), 'the file app/a opens is app/A\'s, not its own');
    assert.ok(!paths.holds('conf'), 'a directory is no key\'s file');
    // The last file of a directory gone, the directory is (deleteFile removes it), and another spelling may take it.
    paths.remove('conf/x');
    assert.equal(paths.clash('CONF/y'), undefined);
    paths.remove('app/a');
    assert.ok(paths.holds('app/A'), 'removing another spelling removes nothing');
  });

  test('sync fold: normalisation folds NFC and NFD of a name, case folding alone does not', () => {
    const nfc = 'caf\u00e9';
    const nfd = 'cafe\u0301';
    const normalising = new FoldedPaths(nameFolding(false, true)!);
    normalising.add(nfc);
    assert.deepEqual(normalising.clash(nfd), { held: nfc, directory: false });
    assert.equal(normalising.clash('CAF\u00c9'), undefined);
    const both = new FoldedPaths(nameFolding(true, true)!);
    both.add(nfc);
    assert.deepEqual(both.clash('CAFE\u0301'), { held: nfc, directory: false });
    const caseOnly = new FoldedPaths(nameFolding(true, false)!);
    caseOnly.add(nfc);
    assert.equal(caseOnly.clash(nfd), undefined);
    assert.equal(nameFolding(false, false), undefined, 'no folding: sync keeps no map at all');
    assert.equal(nameFolding(true, true)!.what, 'case and Unicode normalisation');
  });

  test('sync fold: the probe finds that this file system folds nothing, and leaves nothing in DIR', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mercury-sync-fold-'));
    try {
      assert.equal(probeNameFolding(dir), undefined);
      assert.deepEqual(readdirSync(dir), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
