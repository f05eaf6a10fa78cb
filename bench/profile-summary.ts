/**
 * `node dist/bench/profile-summary.js FILE.cpuprofile [TOP]`: the functions of a V8 CPU profile (`--cpu-prof`, or
 * BENCH_PROFILE / BENCH_HOST_PROFILE of the benchmarks) by self time and by inclusive time, TOP of each (default 30).
 * Times are sample counts times the mean sampling interval, so a preempted gap is not charged to the frame after it.
 * A function is named with its file's last two path parts and its line, since many are anonymous.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}
interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly startTime: number;
  readonly endTime: number;
}

function summarizeProfile(profile: Profile, top: number): string[] {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  const samplesAt = new Map<number, number>();
  for (const id of profile.samples) samplesAt.set(id, (samplesAt.get(id) ?? 0) + 1);
  const nameOf = (node: ProfileNode): string => `${node.callFrame.functionName || '(anonymous)'} ${node.callFrame.url.split('/').slice(-2).join('/')}:${node.callFrame.lineNumber}`;
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, count] of samplesAt) {
    const name = nameOf(byId.get(id)!);
    self.set(name, (self.get(name) ?? 0) + count);
    // A recursive function is counted once per sample in its inclusive time.
    const seen = new Set<string>();
    for (let current: number | undefined = id; current !== undefined; current = parentOf.get(current)) {
      const frame = nameOf(byId.get(current)!);
      if (seen.has(frame)) continue;
      seen.add(frame);
      inclusive.set(frame, (inclusive.get(frame) ?? 0) + count);
    }
  }
  const msPerSample = (profile.endTime - profile.startTime) / 1000 / Math.max(1, profile.samples.length);
  const rows = (counts: Map<string, number>): string[] =>
    [...counts]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, count]) => `${(count * msPerSample).toFixed(1).padStart(9)} ms  ${name}`);
  return [`${profile.samples.length} samples, ${(profile.samples.length * msPerSample).toFixed(0)} ms`, '--- self time', ...rows(self), '--- inclusive time', ...rows(inclusive)];
}

const [file, topText] = process.argv.slice(2);
if (file === undefined) {
  console.error('usage: node dist/bench/profile-summary.js FILE.cpuprofile [TOP]');
  process.exitCode = 2;
} else {
  console.log(summarizeProfile(JSON.parse(readFileSync(file, 'utf8')) as Profile, Number(topText ?? 30)).join('\n'));
}
