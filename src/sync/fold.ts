/**
 * Names that DIR's file system takes for one: on a case-insensitive DIR (macOS APFS and HFS+ by default, Windows, a
 * vfat or SMB mount, ext4 with casefold) `app/A` and `app/a` are one file, and on a normalisation-insensitive one
 * (APFS, HFS+, casefold) so are the NFC and NFD spellings of `é`. Keys are byte strings, so two live keys can name one
 * file there: a put of one replaced the other's content, a delete of one removed the other's file, and the budget
 * counted two files where DIR held one (audit, 2026-12-07). docs/decisions.md record 55 says what sync does instead.
 *
 * FoldedPaths remembers, by folded name, how sync spelled each file and directory it holds in DIR, so that a key whose
 * file or directory DIR already holds under another spelling is seen before anything is written or deleted. Kept only
 * when DIR folds (probeNameFolding, files.ts): on any other DIR sync does exactly what it did before.
 */

/** How DIR's file system folds a `/`-separated path, and what it folds (for the operator: "case", ...). */
export interface NameFolding {
  readonly fold: (path: string) => string;
  readonly what: string;
}

/**
 * The folding for a file system that folds case and/or normalisation. Case: upper then lower case, which folds
 * more than some file systems do (`ß` and `ss` are one name here): a key refused for a name DIR would have kept apart
 * is loud and harmless, a pair missed is the bug above.
 */
export function nameFolding(foldsCase: boolean, foldsNormalisation: boolean): NameFolding | undefined {
  if (!foldsCase && !foldsNormalisation) return undefined;
  const normalise = (path: string): string => (foldsNormalisation ? path.normalize('NFD') : path);
  return {
    fold: (path) => normalise(foldsCase ? normalise(path).toUpperCase().toLowerCase() : path),
    what: [foldsCase ? 'case' : '', foldsNormalisation ? 'Unicode normalisation' : ''].filter((part) => part !== '').join(' and '),
  };
}

/** The directories on the way to `path`: `a/b/c` gives `a` and `a/b`. */
function directoriesOf(path: string): string[] {
  const segments = path.split('/');
  return segments.slice(1).map((_, at) => segments.slice(0, at + 1).join('/'));
}

/** Another spelling that DIR holds for a key's file, or for a directory on its way. */
export interface FoldClash {
  /** The path as sync spelled it in DIR. */
  readonly held: string;
  /** True when `held` is a directory (on the way, or other keys under it); false when it is another key's file. */
  readonly directory: boolean;
}

export class FoldedPaths {
  /** By folded path: the spelling sync gave it, and for a directory the count of files under it (0: a file). */
  private readonly held = new Map<string, { readonly path: string; files: number }>();

  constructor(private readonly folding: NameFolding) {}

  /** What DIR folds, for messages: "case", ... */
  get what(): string {
    return this.folding.what;
  }

  /** Counts the file sync holds at `path` (found at start, or written). */
  add(path: string): void {
    const key = this.folding.fold(path);
    if (this.held.get(key)?.path === path) return;
    this.held.set(key, { path, files: 0 });
    for (const directory of directoriesOf(path)) {
      const entry = this.held.get(this.folding.fold(directory));
      if (entry === undefined) this.held.set(this.folding.fold(directory), { path: directory, files: 1 });
      else entry.files++;
    }
  }

  /** Forgets the file at `path` (deleted), and the directories that leaves empty, as deleteFile removes them. */
  remove(path: string): void {
    const key = this.folding.fold(path);
    if (!this.holds(path)) return;
    this.held.delete(key);
    for (const directory of directoriesOf(path)) {
      const folded = this.folding.fold(directory);
      const entry = this.held.get(folded);
      if (entry !== undefined && --entry.files === 0) this.held.delete(folded);
    }
  }

  /** Whether the file sync holds for `path` is spelled `path`: its key's own file. */
  holds(path: string): boolean {
    const entry = this.held.get(this.folding.fold(path));
    return entry?.path === path && entry.files === 0;
  }

  /** What DIR holds under another spelling for `path` or a directory on its way, if anything. */
  clash(path: string): FoldClash | undefined {
    for (const directory of directoriesOf(path)) {
      const entry = this.held.get(this.folding.fold(directory));
      if (entry !== undefined && entry.path !== directory) return { held: entry.path, directory: true };
    }
    const entry = this.held.get(this.folding.fold(path));
    if (entry !== undefined && entry.path !== path) return { held: entry.path, directory: entry.files > 0 };
    return undefined;
  }
}
