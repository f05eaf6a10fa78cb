/**
 * A check of LMDB's two meta pages before the environment is opened. LMDB trusts them: a damaged root page number or
 * page size sends it reading outside the map, and the process dies with SIGSEGV before any error can be reported.
 * This reads the few fields that LMDB relies on and refuses the directory with a clear message instead.
 *
 * Layout, as lmdb-js 3 (LMDB 0.9 with its page header of 24 bytes) writes it, little-endian; meta page i at i * psize:
 *
 * ```
 *   0 u64 pgno (= i)    8 u64 txnid    16 u16 pad    18 u16 flags (P_META 0x08)    20 u16 lower    22 u16 upper
 *  24 u32 magic 0xBEEFC0DE    28 u32 version    32 u64 address    40 u64 mapsize
 *  48 MDB_db free (48 bytes: u32 pad = page size in the free DB, u16 flags, u16 depth, u64 branch, leaf, overflow,
 *     entries, root)    96 MDB_db main (same)    144 u64 last_pg    152 u64 txnid
 * ```
 */
import { closeSync, constants, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { dirname } from 'node:path';
import { MercuryError } from '../errors/index.js';
import { fileKind } from '../fs/bounded-read.js';
import { fileUnusable } from '../fs/dir-lock.js';
import { notDataFile } from './data-files.js';

/**
 * The error that refuses a data file whose meta pages, trees or store records are damaged, saying what to do.
 * `consequence` says why the start cannot go on: LMDB's for a page, the store's own for a record it cannot read.
 */
export function dataFileDamaged(dataFile: string, problem: string, consequence = 'LMDB cannot open it safely'): MercuryError {
  return new MercuryError(
    'DATA_DIR_INVALID',
    `${dataFile} is damaged (${problem}); ${consequence}. See "Damaged data" in the README: a replica starts again on an empty directory, a root is restored from a replica or a backup.`,
  );
}

const LMDB_MAGIC = 0xbeefc0de;
const P_META = 0x08;
const META_BYTES = 160;
const PAGE_BYTES_MIN = 512;
const PAGE_BYTES_MAX = 65_536;
/** LMDB's P_INVALID: the root of an empty database. */
const NO_PAGE = 0xffff_ffff_ffff_ffffn;

function readAt(fd: number, position: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  const read = readSync(fd, buffer, 0, length, position);
  return buffer.subarray(0, read);
}

/** What is wrong with one meta page, or undefined. */
function metaProblem(meta: Buffer, index: number, pageBytes: number, fileBytes: number): string | undefined {
  if (meta.length < META_BYTES) return `meta page ${index} is cut short`;
  if (meta.readUInt32LE(24) !== LMDB_MAGIC) return `meta page ${index} has no LMDB magic number`;
  if ((meta.readUInt16LE(18) & P_META) === 0) return `meta page ${index} is not marked as a meta page`;
  if (meta.readBigUInt64LE(0) !== BigInt(index)) return `meta page ${index} names itself page ${meta.readBigUInt64LE(0)}`;
  const lastPage = meta.readBigUInt64LE(144);
  if (lastPage < 1n || (lastPage + 1n) * BigInt(pageBytes) > BigInt(fileBytes))
    return `meta page ${index} says the file has ${lastPage + 1n} pages of ${pageBytes} bytes, but it is ${fileBytes} bytes`;
  for (const [name, at] of [
    ['free', 48 + 40],
    ['main', 96 + 40],
  ] as const) {
    const root = meta.readBigUInt64LE(at);
    if (root !== NO_PAGE && (root < 2n || root > lastPage)) return `meta page ${index}: the ${name} database's root page ${root} is outside the file`;
  }
  return undefined;
}

/**
 * The data file opened for the reads here. Without blocking: `mercury verify` reads it before anything else looks at
 * it, and a FIFO put at its name hung verify for ever in open(2). What is read is what the descriptor holds, a regular
 * file, whatever was at the name before. DATA_DIR_INVALID, naming it, when this user may not read it.
 */
function openDataFile(dataFile: string): number {
  let fd: number;
  try {
    fd = openSync(dataFile, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    throw fileUnusable(error, dataFile, { dir: dirname(dataFile), done: 'read', needs: 'readable' });
  }
  const stat = fstatSync(fd);
  if (stat.isFile()) return fd;
  closeSync(fd);
  throw notDataFile(dataFile, fileKind(stat));
}

/**
 * Checks `dir`/data.mdb's meta pages; returns a description of the damage, or undefined when they look sound (or
 * there is no data file yet).
 */
export function lmdbMetaProblem(dataFile: string): string | undefined {
  if (!existsSync(dataFile)) return undefined;
  const fd = openDataFile(dataFile);
  try {
    const fileBytes = fstatSync(fd).size;
    if (fileBytes === 0) return undefined; // created, never written: LMDB initialises it
    const first = readAt(fd, 0, META_BYTES);
    if (first.length < META_BYTES) return `the file is ${fileBytes} bytes, shorter than a meta page`;
    const pageBytes = first.readUInt32LE(48);
    if (pageBytes < PAGE_BYTES_MIN || pageBytes > PAGE_BYTES_MAX || (pageBytes & (pageBytes - 1)) !== 0)
      return `meta page 0 gives a page size of ${pageBytes} bytes`;
    const second = readAt(fd, pageBytes, META_BYTES);
    const problem = metaProblem(first, 0, pageBytes, fileBytes) ?? metaProblem(second, 1, pageBytes, fileBytes);
    if (problem !== undefined) return problem;
    if (first.readUInt32LE(28) !== second.readUInt32LE(28)) return `the meta pages disagree on the LMDB format version`;
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/*
 * The B-tree walk. LMDB follows page numbers and node offsets without checking them: a damaged branch page sends a
 * read past the end of the file (SIGBUS on the mapping), a damaged page header trips an assertion (SIGABRT), and
 * neither can be caught. This walks every tree from the current meta page with plain file reads, as LMDB would, and
 * checks what LMDB would trust. Page layout (after the 24-byte header of the meta page comment above):
 *
 * ```
 *   header: 0 u64 pgno   8 u64 txnid (of the commit that wrote the page)   16 u16 pad
 *           18 u16 flags (P_BRANCH 0x01, P_LEAF 0x02, P_OVERFLOW 0x04)
 *           20 u16 lower   22 u16 upper (overflow pages: 20 u32 page count)
 *   24: lower / 2 u16 offsets of the nodes. lmdb-js builds LMDB with MDB_DEVEL, where lower, upper and the node
 *       offsets count from the end of the header (byte 24), not from the start of the page.
 *   nodes: each at 24 + offset, with offset within [upper, page size - 24)
 *   node: 0 u16 lo   2 u16 hi   4 u16 flags   6 u16 key size   8 key, then data
 *         branch: child page = lo | hi << 16 | flags << 32, no data
 *         leaf: data size = lo | hi << 16; flags F_BIGDATA 0x01 (data: u64 first overflow page, u64 txnid, u64
 *               overflow page count; the value's bytes follow the first overflow page's header),
 *               F_SUBDATA 0x02 (data: the 48-byte MDB_db of a named database, root at 40)
 * ```
 */
const PAGE_HEADER_BYTES = 24;
const NODE_HEADER_BYTES = 8;
const P_BRANCH = 0x01;
const P_LEAF = 0x02;
const P_OVERFLOW = 0x04;
const F_BIGDATA = 0x01;
const F_SUBDATA = 0x02;
const DB_RECORD_BYTES = 48;
/** A large value's node data (MDB_ovpage): u64 first overflow page, u64 txnid, u64 page count. */
const OVERFLOW_REF_BYTES = 24;
/** LMDB's own bound on tree depth (CURSOR_STACK): a deeper walk is a loop in damaged pages. */
const TREE_DEPTH_MAX = 32;

class TreeDamage extends Error {}

/** File bytes read per system call while a tree level is walked in page order (16 pages of 4 KiB). */
const BLOCK_BYTES = 65_536;

/**
 * Reads pages of one file through one block of BLOCK_BYTES: the walk visits each level of the trees in page order, so
 * neighbouring pages come from one read (one system call per page made the walk of a 300 MB file take a second).
 * Pages are read in place: `page` gives the offset of a page in `block`, valid until the next call.
 */
class PageReader {
  readonly block: Buffer;
  private blockStart = -1;
  private blockValid = 0;

  constructor(
    private readonly fd: number,
    private readonly pageBytes: number,
  ) {
    this.block = Buffer.alloc(Math.max(BLOCK_BYTES, pageBytes));
  }

  /** The offset of page `pgno` in `block`, or -1 if the file ends inside it. */
  page(pgno: number): number {
    const at = pgno * this.pageBytes;
    if (at < this.blockStart || at + this.pageBytes > this.blockStart + this.blockValid) {
      this.blockValid = readSync(this.fd, this.block, 0, this.block.length, at);
      this.blockStart = at;
      if (this.blockValid < this.pageBytes) return -1;
    }
    return at - this.blockStart;
  }
}

/**
 * Walks the free-page tree, the main tree and every named database of `dataFile` from the newer meta page; returns
 * what is damaged (the first problem met), or undefined. Reads every page of the trees once, a level at a time in page
 * order (160-220 ms for a 300 MB file of 400,000 keys from the page cache on the project machine): run before LMDB
 * opens the file, where a damaged tree would otherwise kill the process on its first read. `onPage` is called after
 * each page (progress).
 */
export function lmdbTreeProblem(dataFile: string, onPage: (pagesRead: number) => void = () => {}): string | undefined {
  const metaProblem = lmdbMetaProblem(dataFile);
  if (metaProblem !== undefined || !existsSync(dataFile)) return metaProblem;
  const fd = openDataFile(dataFile);
  try {
    const fileBytes = fstatSync(fd).size;
    if (fileBytes === 0) return undefined;
    const pageBytes = readAt(fd, 0, META_BYTES).readUInt32LE(48);
    const metas = [readAt(fd, 0, META_BYTES), readAt(fd, pageBytes, META_BYTES)];
    const meta = metas[0]!.readBigUInt64LE(152) >= metas[1]!.readBigUInt64LE(152) ? metas[0]! : metas[1]!;
    const lastPage = Number(meta.readBigUInt64LE(144));
    // LMDB takes a page whose txnid is at least the current transaction's for one written by that transaction, and
    // changes it in place: in the read-only map, SIGSEGV. Every page a committed tree reaches was written by that
    // commit or an earlier one, so no txnid above the meta page's. (Two u32 halves, as for page numbers below.)
    const metaTxnid = meta.readUInt32LE(152) + meta.readUInt32LE(156) * 0x1_0000_0000;
    const reader = new PageReader(fd, pageBytes);
    // One bit per page: a page that two nodes point to is a loop or a cross-link in damaged pages.
    const visited = new Uint8Array(Math.floor(lastPage / 8) + 1);
    let pagesRead = 0;

    /** Where a page was pointed to from, for the message: a tree's root, or node `node` of page `parent`. */
    const describe = (parent: number, node: number, root: string | undefined): string => root ?? `page ${parent} node ${node}`;

    /** Marks `pgno` as reached; returns what is wrong with reaching it (to follow "<where it came from> "), if anything. */
    const claimProblem = (pgno: number): string | undefined => {
      if (pgno < 2 || pgno > lastPage) return `points to page ${pgno}, outside the file's pages 2..${lastPage}`;
      const bit = 1 << (pgno & 7);
      if ((visited[pgno >>> 3]! & bit) !== 0) return `points to page ${pgno}, which another node points to as well`;
      visited[pgno >>> 3]! |= bit;
      return undefined;
    };

    /** Checks that the page read at `base` of `bytes` (-1: the file ended) is page `pgno`. */
    const checkHeader = (bytes: Buffer, base: number, pgno: number): void => {
      if (base < 0) throw new TreeDamage(`page ${pgno} is cut short`);
      // Two u32 halves: page numbers stay below 2^53, and no BigInt per page.
      const named = bytes.readUInt32LE(base) + bytes.readUInt32LE(base + 4) * 0x1_0000_0000;
      if (named !== pgno) throw new TreeDamage(`page ${pgno} names itself page ${bytes.readBigUInt64LE(base)}`);
      const txnid = bytes.readUInt32LE(base + 8) + bytes.readUInt32LE(base + 12) * 0x1_0000_0000;
      if (txnid > metaTxnid)
        throw new TreeDamage(`page ${pgno} says transaction ${bytes.readBigUInt64LE(base + 8)} wrote it, after the last commit (${metaTxnid})`);
      onPage(++pagesRead);
    };

    /**
     * The pages of one tree level, as parallel arrays (a level of a large key space holds millions): page number, and
     * the page and node that point to it (for messages). The few pages of the main tree (whose leaves name the other
     * databases' roots) and the roots' names are kept aside.
     */
    class Level {
      readonly pgnos: number[] = [];
      readonly parents: number[] = [];
      readonly nodes: number[] = [];
      private readonly mainTree = new Set<number>();
      private readonly rootNames = new Map<number, string>();
      add(pgno: number, parent: number, node: number, main: boolean, root?: string): void {
        const index = this.pgnos.length;
        this.pgnos.push(pgno);
        this.parents.push(parent);
        this.nodes.push(node);
        if (main) this.mainTree.add(index);
        if (root !== undefined) this.rootNames.set(index, root);
      }
      get length(): number {
        return this.pgnos.length;
      }
      isMain(index: number): boolean {
        return this.mainTree.has(index);
      }
      /** Where page `index` of this level was pointed to from (built only for a message). */
      from(index: number): string {
        return describe(this.parents[index]!, this.nodes[index]!, this.rootNames.get(index));
      }
      /** The indexes of this level's pages in page order. */
      inPageOrder(): ArrayLike<number> {
        const count = this.pgnos.length;
        // pgno * count + index sorts as numbers, without a comparator, while it stays an exact double.
        if ((lastPage + 1) * count < Number.MAX_SAFE_INTEGER) {
          const keys = new Float64Array(count);
          for (let i = 0; i < count; i++) keys[i] = this.pgnos[i]! * count + i;
          keys.sort();
          const order = new Uint32Array(count);
          for (let i = 0; i < count; i++) order[i] = keys[i]! % count;
          return order;
        }
        return Array.from(this.pgnos.keys()).sort((a, b) => this.pgnos[a]! - this.pgnos[b]!);
      }
    }

    const overflowPage = Buffer.alloc(pageBytes);

    /** Checks one page; queues its children (branch pages, and the roots of named databases) on `next`. */
    const checkPage = (level: Level, index: number, next: Level): void => {
      const pgno = level.pgnos[index]!;
      const main = level.isMain(index);
      const unreachable = claimProblem(pgno);
      if (unreachable !== undefined) throw new TreeDamage(`${level.from(index)} ${unreachable}`);
      // The page is read in place: `at` is the reader's block, `base` the page's offset in it.
      const at = reader.block;
      const base = reader.page(pgno);
      checkHeader(at, base, pgno);
      // Exactly P_BRANCH or P_LEAF: LMDB's other flags never reach a tree page on disk here. P_LOOSE and P_KEEP mark
      // pages in memory that a commit does not write (mdb_page_flush), P_DIRTY_OVF is never set, and P_LEAF2 and
      // P_SUBP belong to the duplicates of MDB_DUPSORT databases (sub-pages inside a node, sub-trees this walk does not
      // enter), which Mercury does not open. LMDB acts on any extra bit it finds (P_SUBP, say, makes it treat the page
      // as a sub-page and write into the read-only map: SIGSEGV).
      const kind = at.readUInt16LE(base + 18);
      if (kind !== P_BRANCH && kind !== P_LEAF)
        throw new TreeDamage(`page ${pgno} (${level.from(index)}) has flags 0x${kind.toString(16)}, neither a branch nor a leaf`);
      const lower = at.readUInt16LE(base + 20);
      const upper = at.readUInt16LE(base + 22);
      if (lower > upper || PAGE_HEADER_BYTES + upper > pageBytes || lower % 2 !== 0)
        throw new TreeDamage(`page ${pgno} (${level.from(index)}) has free space bounds ${lower}..${upper} outside its ${pageBytes} bytes`);
      const nodes = lower / 2;
      if (kind === P_BRANCH && nodes === 0) throw new TreeDamage(`branch page ${pgno} (${level.from(index)}) has no children`);
      for (let i = 0; i < nodes; i++) {
        const relative = at.readUInt16LE(base + PAGE_HEADER_BYTES + 2 * i);
        const offset = PAGE_HEADER_BYTES + relative;
        if (relative < upper || offset + NODE_HEADER_BYTES > pageBytes)
          throw new TreeDamage(`page ${pgno} (${level.from(index)}): node ${i} starts at ${offset}, outside the page's nodes`);
        const node = base + offset;
        const low = at.readUInt16LE(node) + at.readUInt16LE(node + 2) * 0x1_0000;
        const nodeFlags = at.readUInt16LE(node + 4);
        const keyBytes = at.readUInt16LE(node + 6);
        const dataAt = offset + NODE_HEADER_BYTES + keyBytes;
        if (kind === P_BRANCH) {
          if (dataAt > pageBytes) throw new TreeDamage(`${describe(pgno, i, undefined)}: its key runs past the page`);
          next.add(low + nodeFlags * 0x1_0000_0000, pgno, i, main);
          continue;
        }
        if ((nodeFlags & F_BIGDATA) !== 0) {
          const where = describe(pgno, i, undefined);
          if (dataAt + OVERFLOW_REF_BYTES > pageBytes) throw new TreeDamage(`${where}: its overflow page reference runs past the page`);
          const first = at.readUInt32LE(base + dataAt) + at.readUInt32LE(base + dataAt + 4) * 0x1_0000_0000;
          const counted = at.readUInt32LE(base + dataAt + 16) + at.readUInt32LE(base + dataAt + 20) * 0x1_0000_0000;
          const unreachableValue = claimProblem(first);
          if (unreachableValue !== undefined) throw new TreeDamage(`${where} (a large value) ${unreachableValue}`);
          // Out of page order: read on its own, leaving the block (and this page in it) as it is.
          const read = readSync(fd, overflowPage, 0, pageBytes, first * pageBytes);
          checkHeader(overflowPage, read === pageBytes ? 0 : -1, first);
          const count = overflowPage.readUInt32LE(20);
          if (overflowPage.readUInt16LE(18) !== P_OVERFLOW || count < 1 || first + count - 1 > lastPage)
            throw new TreeDamage(`${where}: its large value at page ${first} is not a run of overflow pages within the file`);
          // LMDB reads the value's size from the node and its bytes from the run: a size beyond the run reads past
          // it (SIGBUS past the end of the file). An overwrite decides from the node's page count whether the new
          // value fits the run, and writes that far.
          if (counted !== count)
            throw new TreeDamage(`${where}: its large value at page ${first} counts ${counted} overflow pages, the run ${count}`);
          if (low > count * pageBytes - PAGE_HEADER_BYTES)
            throw new TreeDamage(`${where}: its large value of ${low} bytes does not fit its ${count} overflow pages at page ${first}`);
          for (let page = first + 1; page < first + count; page++) visited[page >>> 3]! |= 1 << (page & 7);
          continue;
        }
        if (dataAt + low > pageBytes) throw new TreeDamage(`${describe(pgno, i, undefined)}: its ${low}-byte value runs past the page`);
        if (main && (nodeFlags & F_SUBDATA) !== 0) {
          if (low !== DB_RECORD_BYTES) throw new TreeDamage(`${describe(pgno, i, undefined)}: a named database record of ${low} bytes`);
          const root = at.readBigUInt64LE(base + dataAt + 40);
          const name = at.toString('utf8', node + NODE_HEADER_BYTES, base + dataAt).replace(/\0+$/, '');
          if (root !== NO_PAGE) next.add(Number(root), pgno, i, false, `the root of database "${name}"`);
        }
      }
    };

    // Level by level, each level in page order: the roots, then every child they name, and so on. A named database's
    // root joins the level below the main tree's leaf that names it.
    let level = new Level();
    for (const [name, at, main] of [
      ['free', 48 + 40, false],
      ['main', 96 + 40, true],
    ] as const) {
      const root = meta.readBigUInt64LE(at);
      if (root !== NO_PAGE) level.add(Number(root), 0, 0, main, `the root of the ${name} database`);
    }
    // Depth counts from the meta page through the main tree into a named database's tree, as LMDB's cursor stack does.
    for (let depth = 1; level.length > 0; depth++) {
      if (depth > TREE_DEPTH_MAX) throw new TreeDamage(`${level.from(0)}: the tree is deeper than ${TREE_DEPTH_MAX} levels`);
      const order = level.inPageOrder();
      const next = new Level();
      for (let i = 0; i < order.length; i++) checkPage(level, order[i]!, next);
      level = next;
    }
    return undefined;
  } catch (error) {
    if (error instanceof TreeDamage) return error.message;
    throw error;
  } finally {
    closeSync(fd);
  }
}
