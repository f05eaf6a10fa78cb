/**
 * The B-tree walk that runs before LMDB opens a data file (src/store/lmdb-meta.ts), on a real store of several tree
 * levels whose pages are then damaged in place: each kind of damage that would crash LMDB is named, and a sound file
 * passes. (The walk reads each level in page order through one block; these pin that it still checks every page.)
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, cpSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { lmdbTreeProblem, Store } from '../src/store/index.js';
import { makeTempDir, removeDir } from './support/process.js';

const P_BRANCH = 0x01;
const PAGE_HEADER_BYTES = 24;

/** The page numbers of every branch page in the file (a page that names itself and has the branch flag). */
function branchPages(file: Buffer, pageBytes: number): number[] {
  const pages: number[] = [];
  for (let pgno = 2; (pgno + 1) * pageBytes <= file.length; pgno++) {
    const at = pgno * pageBytes;
    if (Number(file.readBigUInt64LE(at)) === pgno && (file.readUInt16LE(at + 18) & 0x07) === P_BRANCH) pages.push(pgno);
  }
  return pages;
}

/** The child page number of node `node` of the branch page `pgno`, and where it is stored. */
function childAt(file: Buffer, pageBytes: number, pgno: number, node: number): { child: number; offset: number } {
  const at = pgno * pageBytes;
  const offset = at + PAGE_HEADER_BYTES + file.readUInt16LE(at + PAGE_HEADER_BYTES + 2 * node);
  const child = file.readUInt16LE(offset) + file.readUInt16LE(offset + 2) * 0x1_0000 + file.readUInt16LE(offset + 4) * 0x1_0000_0000;
  return { child, offset };
}

function setChild(file: Buffer, offset: number, child: number): void {
  file.writeUInt16LE(child & 0xffff, offset);
  file.writeUInt16LE(Math.floor(child / 0x1_0000) & 0xffff, offset + 2);
  file.writeUInt16LE(Math.floor(child / 0x1_0000_0000) & 0xffff, offset + 4);
}

describe('LMDB tree walk', () => {
  let root: string;
  let sound: string;

  before(async () => {
    root = makeTempDir('mercury-tree-walk-');
    sound = join(root, 'sound');
    const store = Store.open({ path: sound });
    const value = Buffer.alloc(200, 'v');
    // 20,000 keys in one entry: a key space of three levels whose pages are all live (written once, in one
    // transaction), so that damaging any branch page found in the file damages the tree.
    store.commit(1, (view) => {
      for (let i = 0; i < 20_000; i++) view.apply({ type: 'put', key: Buffer.from(`walk/${String((i * 7_919) % 20_000).padStart(6, '0')}`), value });
    });
    await store.flushed();
    await new Promise((resolve) => setTimeout(resolve, 10));
    await store.close();
  });
  after(() => removeDir(root));

  /** A copy of the sound directory with `damage` applied to its data file; returns the walk's finding. */
  function walkDamaged(name: string, damage: (file: Buffer, pageBytes: number) => void): string | undefined {
    const dir = join(root, name);
    cpSync(sound, dir, { recursive: true });
    const path = join(dir, 'data.mdb');
    const file = readFileSync(path);
    damage(file, file.readUInt32LE(48));
    writeFileSync(path, file);
    return lmdbTreeProblem(path);
  }

  test('a sound file passes, and every page of its trees is read once', () => {
    let pages = 0;
    assert.equal(
      lmdbTreeProblem(join(sound, 'data.mdb'), (read) => (pages = read)),
      undefined,
    );
    const file = readFileSync(join(sound, 'data.mdb'));
    // At least the key space's leaves: 20,000 records of about 230 bytes do not fit in fewer than 1,100 pages of 4 KiB.
    assert.ok(pages > 1_100, `${pages} pages read`);
    assert.ok(branchPages(file, file.readUInt32LE(48)).length >= 2, 'the key space has branch pages');
  });

  test('a branch node pointing past the file is named', () => {
    const problem = walkDamaged('past-end', (file, pageBytes) => {
      const branch = branchPages(file, pageBytes)[0]!;
      setChild(file, childAt(file, pageBytes, branch, 1).offset, 1_000_000_000);
    });
    assert.match(problem ?? '', /page \d+ node 1 points to page 1000000000, outside the file's pages 2\.\.\d+/);
  });

  test('two branch nodes pointing to one page (a cross-link) are named', () => {
    const problem = walkDamaged('cross-link', (file, pageBytes) => {
      const branch = branchPages(file, pageBytes).find((pgno) => file.readUInt16LE(pgno * pageBytes + 20) / 2 >= 3)!;
      const first = childAt(file, pageBytes, branch, 0).child;
      setChild(file, childAt(file, pageBytes, branch, 2).offset, first);
    });
    assert.match(problem ?? '', /points to page \d+, which another node points to as well/);
  });

  test('a branch pointing to itself (a loop) is named, not followed forever', () => {
    const problem = walkDamaged('loop', (file, pageBytes) => {
      const branch = branchPages(file, pageBytes)[0]!;
      setChild(file, childAt(file, pageBytes, branch, 0).offset, branch);
    });
    assert.match(problem ?? '', /points to page \d+, which another node points to as well/);
  });

  test('a page whose header names another page is named', () => {
    const problem = walkDamaged('misnamed', (file, pageBytes) => {
      const branch = branchPages(file, pageBytes)[0]!;
      const child = childAt(file, pageBytes, branch, 1).child;
      file.writeBigUInt64LE(BigInt(child + 7), child * pageBytes);
    });
    assert.match(problem ?? '', /page (\d+) names itself page (\d+)/);
  });

  test('a node offset outside its page is named', () => {
    const problem = walkDamaged('node-offset', (file, pageBytes) => {
      const branch = branchPages(file, pageBytes)[0]!;
      file.writeUInt16LE(pageBytes, branch * pageBytes + PAGE_HEADER_BYTES);
    });
    assert.match(problem ?? '', /node 0 starts at \d+, outside the page's nodes/);
  });
});
