/**
 * The B-tree walk that runs before LMDB opens a data file (src/store/lmdb-meta.ts), on a real store of several tree
 * levels whose pages are then damaged in place: each kind of damage that would crash LMDB is named, and a sound file
 * passes. (The walk reads each level in page order through one block; these pin that it still checks every page.)
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, cpSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MercuryError } from '../src/errors/index.js';
import { lmdbTreeProblem, Store } from '../src/store/index.js';
import { CLI_PATH, makeTempDir, removeDir } from './support/process.js';

const P_BRANCH = 0x01;
const P_LEAF = 0x02;
const P_SUBP = 0x40;
const F_BIGDATA = 0x01;
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

/** A leaf page that the key space's tree reaches (the first child of a branch page that is a leaf). */
function reachableLeaf(file: Buffer, pageBytes: number): number {
  for (const branch of branchPages(file, pageBytes)) {
    const { child } = childAt(file, pageBytes, branch, 0);
    if (file.readUInt16LE(child * pageBytes + 18) === P_LEAF) return child;
  }
  assert.fail('no leaf page below a branch page');
}

/** Where the node of a large value (F_BIGDATA) is in the file: its header's offset, and its data's. */
function largeValueNode(file: Buffer, pageBytes: number): { node: number; data: number } {
  for (let pgno = 2; (pgno + 1) * pageBytes <= file.length; pgno++) {
    const at = pgno * pageBytes;
    if (Number(file.readBigUInt64LE(at)) !== pgno || file.readUInt16LE(at + 18) !== P_LEAF) continue;
    for (let i = 0; i < file.readUInt16LE(at + 20) / 2; i++) {
      const node = at + PAGE_HEADER_BYTES + file.readUInt16LE(at + PAGE_HEADER_BYTES + 2 * i);
      if ((file.readUInt16LE(node + 4) & F_BIGDATA) !== 0) return { node, data: node + 8 + file.readUInt16LE(node + 6) };
    }
  }
  assert.fail('no large value in the file');
}

/**
 * Runs `mercury serve` on `dir`; if it starts, makes one write and one read of every key (which met the damage before the
 * walk checked it), then stops it. Resolves with how it ended: exit code or signal, and stderr.
 */
function serveAndTouch(dir: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const child = spawn(process.execPath, [CLI_PATH, 'serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--replication-listen', '127.0.0.1:0', '--wire-listen', '127.0.0.1:0', '--auth', 'off'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  let touched = false;
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
    const url = /listening on (http:\/\/\S+)/.exec(stdout)?.[1];
    if (url === undefined || touched) return;
    touched = true;
    void (async () => {
      try {
        await (await fetch(`${url}/v1/kv/new`, { method: 'PUT', body: 'x' })).arrayBuffer();
        await (await fetch(`${url}/v1/kv?prefix=&limit=10000`)).arrayBuffer();
        await (await fetch(`${url}/v1/log?from=1`)).arrayBuffer();
      } catch {
        // The process died: its exit says how.
      }
      child.kill('SIGTERM');
    })();
  });
  return new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stderr })));
}

describe('LMDB tree walk', () => {
  let root: string;
  let sound: string;

  before(async () => {
    root = makeTempDir('mercury-tree-walk-');
    sound = join(root, 'sound');
    const store = Store.open({ path: sound });
    const value = Buffer.alloc(200, 'v');
    const large = Buffer.alloc(9_000, 'L');
    // 20,000 keys in one entry: a key space of three levels whose pages are all live (written once, in one
    // transaction), so that damaging any branch page found in the file damages the tree.
    store.commit(1, (view) => {
      for (let i = 0; i < 20_000; i++) view.apply({ type: 'put', key: Buffer.from(`walk/${String((i * 7_919) % 20_000).padStart(6, '0')}`), value });
      // Values in overflow pages (larger than a page), as the log's record of this entry is too.
      for (let i = 0; i < 3; i++) view.apply({ type: 'put', key: Buffer.from(`large/${i}`), value: large });
    });
    await store.flushed();
    await new Promise((resolve) => setTimeout(resolve, 10));
    await store.close();
  });
  after(() => removeDir(root));

  /** A copy of the sound directory named `name` with `damage` applied to its data file; returns the copy's path. */
  function damagedCopy(name: string, damage: (file: Buffer, pageBytes: number) => void): string {
    const dir = join(root, name);
    cpSync(sound, dir, { recursive: true });
    const path = join(dir, 'data.mdb');
    const file = readFileSync(path);
    damage(file, file.readUInt32LE(48));
    writeFileSync(path, file);
    return dir;
  }

  /** A copy of the sound directory with `damage` applied to its data file; returns the walk's finding. */
  function walkDamaged(name: string, damage: (file: Buffer, pageBytes: number) => void): string | undefined {
    return lmdbTreeProblem(join(damagedCopy(name, damage), 'data.mdb'));
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

  // Three bit flips found in review (each passed the walk, then killed `serve` on its first write or read): the walk
  // now holds pages to what LMDB writes, not just to what keeps its own reads in bounds.
  test('a leaf page with a flag bit beyond P_LEAF (0x42: a sub-page to LMDB) is named', () => {
    const problem = walkDamaged('leaf-subp', (file, pageBytes) => {
      file[reachableLeaf(file, pageBytes) * pageBytes + 18]! |= P_SUBP;
    });
    assert.match(problem ?? '', /page \d+ \(page \d+ node 0\) has flags 0x42, neither a branch nor a leaf/);
  });

  test('a page written, by its header, after the last commit is named', () => {
    const problem = walkDamaged('txnid', (file, pageBytes) => {
      file[reachableLeaf(file, pageBytes) * pageBytes + 11]! ^= 0x08;
    });
    assert.match(problem ?? '', /page \d+ says transaction \d+ wrote it, after the last commit \(\d+\)/);
  });

  test('an overflow page written after the last commit is named', () => {
    const problem = walkDamaged('overflow-txnid', (file, pageBytes) => {
      const { data } = largeValueNode(file, pageBytes);
      file[Number(file.readBigUInt64LE(data)) * pageBytes + 11]! ^= 0x08;
    });
    assert.match(problem ?? '', /says transaction \d+ wrote it, after the last commit/);
  });

  test('a large value longer than its overflow pages is named', () => {
    const problem = walkDamaged('overflow-size', (file, pageBytes) => {
      const { node } = largeValueNode(file, pageBytes);
      file[node + 3]! ^= 0x02; // +32 MiB
    });
    assert.match(problem ?? '', /its large value of \d+ bytes does not fit its \d+ overflow pages at page \d+/);
  });

  test("a large value whose node counts other overflow pages than its run's header is named", () => {
    const problem = walkDamaged('overflow-count', (file, pageBytes) => {
      const { data } = largeValueNode(file, pageBytes);
      file.writeBigUInt64LE(file.readBigUInt64LE(data + 16) + 1n, data + 16);
    });
    assert.match(problem ?? '', /its large value at page \d+ counts \d+ overflow pages, the run \d+/);
  });

  test('serve refuses each of those with DATA_DIR_INVALID instead of dying on a signal', async () => {
    for (const [name, damage] of [
      ['serve-subp', (file, pageBytes) => (file[reachableLeaf(file, pageBytes) * pageBytes + 18]! |= P_SUBP)],
      ['serve-txnid', (file, pageBytes) => (file[reachableLeaf(file, pageBytes) * pageBytes + 11]! ^= 0x08)],
      ['serve-size', (file, pageBytes) => (file[largeValueNode(file, pageBytes).node + 3]! ^= 0x02)],
    ] as const satisfies readonly (readonly [string, (file: Buffer, pageBytes: number) => void])[]) {
      const ended = await serveAndTouch(damagedCopy(name, damage));
      assert.deepEqual({ code: ended.code, signal: ended.signal }, { code: 1, signal: null }, `${name}: ${ended.stderr}`);
      assert.match(ended.stderr, /DATA_DIR_INVALID: .*data\.mdb is damaged/, name);
    }
  });

  test('a node offset outside its page is named', () => {
    const problem = walkDamaged('node-offset', (file, pageBytes) => {
      const branch = branchPages(file, pageBytes)[0]!;
      file.writeUInt16LE(pageBytes, branch * pageBytes + PAGE_HEADER_BYTES);
    });
    assert.match(problem ?? '', /node 0 starts at \d+, outside the page's nodes/);
  });
  // Found by audit: readers (openLocal, verify beside a running node) check the meta pages only, since a writer may
  // reuse pages under a walk; a damaged page they met came out as LMDB's raw error (MDB_CORRUPTED, MDB_PAGE_NOTFOUND,
  // a code and no advice) instead of DATA_CORRUPTED, the error every other damaged read gives, and was not recorded.
  test('a reader that meets a damaged page gets DATA_CORRUPTED, recorded, not LMDB\'s raw error', async () => {
    const dir = damagedCopy('reader-meets-damage', (file, pageBytes) => {
      const leaf = reachableLeaf(file, pageBytes);
      for (const branch of branchPages(file, pageBytes)) {
        const { child, offset } = childAt(file, pageBytes, branch, 0);
        // Page 1 is a meta page: LMDB reaches it where a leaf should be ("Located page was wrong type").
        if (child === leaf) return setChild(file, offset, 1);
      }
    });
    const store = Store.open({ path: dir, readOnly: true });
    try {
      assert.throws(
        () => {
          store.range(Buffer.alloc(0), Buffer.alloc(0), 100_000);
          store.readLog(1, 100_000);
        },
        (error: unknown) => error instanceof MercuryError && error.code === 'DATA_CORRUPTED' && /MDB_CORRUPTED|MDB_PAGE_NOTFOUND/.test(error.message),
      );
      assert.ok(store.damage().count >= 1, 'the damage is recorded, as for a damaged record');
    } finally {
      await store.close();
    }
  });
});
