/** Version strings for the results page: a binary's `--version` output and an npm package's version. */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** The first match of `pattern` in `command --version`, or "unknown". */
export function binaryVersion(command: string, pattern: RegExp): string {
  const result = spawnSync(command, ['--version'], { encoding: 'utf8' });
  const match = pattern.exec(`${result.stdout ?? ''}${result.stderr ?? ''}`);
  return match?.[1] ?? 'unknown';
}

/** The installed version of an npm package (read from its package.json, whatever its `exports` allow). */
export function packageVersion(name: string): string {
  const entry = require.resolve(name);
  const root = entry.slice(0, entry.lastIndexOf(`/node_modules/${name}/`) + `/node_modules/${name}/`.length);
  return (JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { version: string }).version;
}
