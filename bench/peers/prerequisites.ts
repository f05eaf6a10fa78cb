/**
 * The peers come from Debian's packages (etcd-server 3.4, redis-server + redis-tools 7.0). A missing one is reported
 * with the single apt-get command that installs everything missing; `--install` runs it.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { RequiredBinary } from './system.js';

/** Finds an executable on PATH, like `which`; undefined when absent. */
export function findExecutable(binary: string, path = process.env.PATH ?? ''): string | undefined {
  for (const directory of path.split(delimiter)) {
    if (directory === '') continue;
    const candidate = join(directory, binary);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here; try the next directory.
    }
  }
  return undefined;
}

export interface MissingReport {
  readonly missing: readonly RequiredBinary[];
  /** The Debian packages to install, each once, in the order first needed. */
  readonly packages: readonly string[];
}

export function findMissing(required: readonly RequiredBinary[], exists: (binary: string) => boolean): MissingReport {
  const missing = required.filter((item) => !exists(item.binary));
  const packages = [...new Set(missing.map((item) => item.debianPackage))];
  return { missing, packages };
}

/** The one command that fixes it: `apt-get install -y PACKAGES`, with sudo when not root. */
export function installCommand(packages: readonly string[], isRoot: boolean): string[] {
  return [...(isRoot ? [] : ['sudo']), 'apt-get', 'install', '-y', ...packages];
}

export function missingMessage(report: MissingReport, isRoot: boolean): string {
  const binaries = [...new Set(report.missing.map((item) => item.binary))];
  const names = binaries.length === 1 ? binaries[0]! : `${binaries.slice(0, -1).join(', ')} and ${binaries.at(-1)!}`;
  return `bench:peers: ${names} not found on PATH. Install with:\n\n  ${installCommand(report.packages, isRoot).join(' ')}\n\nor run again with --install.`;
}

/** Runs the install command (and `apt-get update` then again if the package lists were stale). Returns success. */
export function runInstall(packages: readonly string[], isRoot: boolean): boolean {
  const command = installCommand(packages, isRoot);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args: string[]): boolean => {
    process.stderr.write(`bench:peers: running ${args.join(' ')}\n`);
    return spawnSync(args[0]!, args.slice(1), { stdio: 'inherit', env }).status === 0;
  };
  if (run(command)) return true;
  return run([...(isRoot ? [] : ['sudo']), 'apt-get', 'update']) && run(command);
}
