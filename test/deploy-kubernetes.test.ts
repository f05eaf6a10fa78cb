/**
 * deploy/: the Kubernetes manifests validated offline against the Kubernetes API schemas (kubernetes-models: types,
 * required fields, enums, formats; not unknown fields, which the upstream schemas allow), then held to the rules the
 * README promises (non-root, read-only root filesystem, probes on /healthz and /readyz, selectors that select, Services
 * that name real ports, every `mercury` flag one that the CLI knows) and to running secure (issue 13: no `--insecure`,
 * auth left required, TLS files, tokens and keys mounted read-only from Secrets on every container that runs mercury,
 * probes over HTTPS); the systemd unit and its role drop-ins checked with the same CLI flags, their LoadCredential=
 * lines and, where systemd-analyze exists, `verify` and its offline security score; the container image's command too.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadAll } from 'js-yaml';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Service } from 'kubernetes-models/v1/Service';
import { makeTempDir, removeDir, runCli } from './support/process.js';

const DEPLOY_DIR = fileURLToPath(new URL('../../deploy/', import.meta.url));
/** `systemd-analyze security` exposure, in tenths (1.4 when this was written); above 2.0 someone dropped hardening. */
const SYSTEMD_EXPOSURE_TENTHS_MAX = 20;

/** The models of the kinds deploy/ may use, by "apiVersion/kind". */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'apps/v1/DaemonSet': DaemonSet,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
};

// The manifests' shape, as far as these checks read it.
interface Probe {
  httpGet?: { path?: string; port?: string | number; scheme?: string };
  exec?: { command: string[] };
}
interface Container {
  name: string;
  args?: string[];
  command?: string[];
  ports?: { name?: string; containerPort: number }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
  restartPolicy?: string;
  securityContext?: { runAsNonRoot?: boolean; readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; capabilities?: { drop?: string[] } };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface PodSpec {
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  containers: Container[];
  initContainers?: Container[];
  volumes?: { name: string; emptyDir?: object; secret?: { secretName: string }; configMap?: { name: string } }[];
}
interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec: {
    replicas?: number;
    serviceName?: string;
    clusterIP?: string;
    selector?: Record<string, string> & { matchLabels?: Record<string, string> };
    ports?: { name: string; port: number; targetPort?: string | number }[];
    template?: { metadata: { labels: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec };
    volumeClaimTemplates?: { metadata: { name: string } }[];
  };
  file: string;
}

function loadManifests(): Manifest[] {
  const dir = join(DEPLOY_DIR, 'kubernetes');
  const manifests: Manifest[] = [];
  for (const file of readdirSync(dir).filter((name) => /\.ya?ml$/.test(name))) {
    for (const document of loadAll(readFileSync(join(dir, file), 'utf8'), null, { filename: file })) {
      if (document === null || document === undefined) continue;
      manifests.push({ ...(document as Omit<Manifest, 'file'>), file });
    }
  }
  return manifests;
}

/** The endpoint a probe asks: httpGet's path, or the /healthz or /readyz an exec probe's command requests. */
function probePath(probe: Probe | undefined): string | undefined {
  if (probe?.httpGet !== undefined) return probe.httpGet.path;
  return /\/(healthz|readyz)\b/.exec(probe?.exec?.command.join(' ') ?? '')?.[0];
}

function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  if (selector === undefined || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([name, value]) => labels?.[name] === value);
}

/** Every `--flag` the CLI's usage names. */
async function cliFlags(): Promise<Set<string>> {
  const help = await runCli(['--help']);
  const text = help.stdout.toString() + help.stderr;
  const flags = new Set(text.match(/--[a-z][a-z-]*/g) ?? []);
  assert.ok(flags.has('--data-dir') && flags.has('--upstream'), `mercury --help lists the serve flags: ${text}`);
  return flags;
}

/** The flags of a `mercury serve` command line ("--name=value" or "--name value"). */
function serveFlags(args: readonly string[]): string[] {
  return args.filter((arg) => arg.startsWith('--')).map((arg) => arg.split('=')[0]!);
}

function flagValue(args: readonly string[], flag: string): string | undefined {
  const inline = args.find((arg) => arg.startsWith(`${flag}=`));
  if (inline !== undefined) return inline.slice(flag.length + 1);
  const at = args.indexOf(flag);
  return at === -1 ? undefined : args[at + 1];
}

function podsOf(manifests: readonly Manifest[]): { manifest: Manifest; pod: PodSpec; labels: Record<string, string> }[] {
  return manifests.filter((m) => m.spec.template !== undefined).map((manifest) => ({ manifest, pod: manifest.spec.template!.spec, labels: manifest.spec.template!.metadata.labels }));
}

/** Every file under deploy/, as paths relative to it. */
function deployFiles(): string[] {
  return readdirSync(DEPLOY_DIR, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(DEPLOY_DIR.length));
}

/**
 * The volume a container reads `file` from: the mount whose path holds it, which must be read-only, and the pod
 * volume behind it. Fails naming the container otherwise.
 */
function mountedFrom(pod: PodSpec, container: Container, file: string | undefined, at: string): NonNullable<PodSpec['volumes']>[number] {
  assert.ok(file !== undefined, `${at}: the flag names a file`);
  const mount = container.volumeMounts?.find((candidate) => file.startsWith(`${candidate.mountPath}/`));
  assert.ok(mount !== undefined, `${at}: ${file} is on a mounted volume`);
  assert.equal(mount.readOnly, true, `${at}: ${mount.mountPath} is mounted read-only`);
  const volume = pod.volumes?.find((candidate) => candidate.name === mount.name);
  assert.ok(volume !== undefined, `${at}: volume ${mount.name} exists`);
  return volume;
}

/** The systemd drop-ins beside the unit, one per role, and the flags their MERCURY_ROLE_ARGS pass. */
function systemdDropIns(): { file: string; text: string; roleArgs: string[] }[] {
  return ['root.conf', 'replica.conf'].map((file) => {
    const text = readFileSync(join(DEPLOY_DIR, 'systemd', file), 'utf8');
    const roleArgs = /^Environment="MERCURY_ROLE_ARGS=([^"]*)"$/m.exec(text)?.[1]?.split(/\s+/);
    assert.ok(roleArgs !== undefined, `${file} sets MERCURY_ROLE_ARGS`);
    return { file, text, roleArgs };
  });
}

/** Each `%d/NAME` (the credentials directory) a command line reads has its `LoadCredential=NAME:PATH` in `unit`. */
function assertCredentialsLoaded(args: readonly string[], unit: string, what: string): void {
  for (const arg of args) {
    const name = /%d\/([^\s]+)$/.exec(arg)?.[1];
    if (name !== undefined) assert.match(unit, new RegExp(`^LoadCredential=${name.replace(/\./g, '\\.')}:/etc/mercury/`, 'm'), `${what}: ${arg} is loaded with LoadCredential=`);
  }
}

describe('deploy: kubernetes and systemd', () => {
  const manifests = loadManifests();
  const pods = podsOf(manifests);

  test('deploy: every manifest is valid against the Kubernetes schema of its kind', () => {
    assert.ok(manifests.length >= 8, `found ${manifests.length} manifests`);
    for (const manifest of manifests) {
      const { file, ...data } = manifest;
      const Model = MODELS[`${data.apiVersion}/${data.kind}`];
      assert.ok(Model !== undefined, `${file}: no schema model for ${data.apiVersion} ${data.kind}`);
      assert.doesNotThrow(() => new Model(data as never).validate(), `${file}: ${data.kind} ${data.metadata.name}`);
    }
    const names = manifests.map((m) => `${m.kind}/${m.metadata.name}`);
    assert.equal(new Set(names).size, names.length, `names are unique: ${names.join(', ')}`);
  });

  test('deploy: the schema check catches a broken manifest', () => {
    const root = manifests.find((m) => m.kind === 'StatefulSet')!;
    const { file: _file, ...data } = root;
    const broken = structuredClone(data);
    (broken.spec.template!.spec.containers[0]!.ports![0] as { containerPort: unknown }).containerPort = 'http';
    assert.throws(() => new StatefulSet(broken as never).validate(), /containerPort must be integer/);
  });

  test('deploy: pods run non-root on a read-only root filesystem without privileges, with probes on /healthz and /readyz', async () => {
    const flags = await cliFlags();
    for (const { manifest, pod } of pods) {
      const where = `${manifest.file} ${manifest.kind}/${manifest.metadata.name}`;
      assert.equal(pod.securityContext?.runAsNonRoot, true, `${where}: runAsNonRoot`);
      assert.ok((pod.securityContext?.runAsUser ?? 0) > 0, `${where}: a fixed non-root uid`);
      for (const container of [...pod.containers, ...(pod.initContainers ?? [])]) {
        const at = `${where} container ${container.name}`;
        assert.equal(container.securityContext?.readOnlyRootFilesystem, true, `${at}: readOnlyRootFilesystem`);
        assert.equal(container.securityContext?.allowPrivilegeEscalation, false, `${at}: allowPrivilegeEscalation`);
        assert.deepEqual(container.securityContext?.capabilities?.drop, ['ALL'], `${at}: drops every capability`);
        const args = container.args ?? [];
        if (args[0] !== 'serve') continue;
        // A mercury node: flags the CLI knows, its data directory on a volume, and its health endpoints probed.
        for (const flag of serveFlags(args)) assert.ok(flags.has(flag), `${at}: mercury serve has no ${flag}`);
        const dataDir = flagValue(args, '--data-dir');
        assert.ok(container.volumeMounts?.some((mount) => mount.mountPath === dataDir && mount.readOnly !== true), `${at}: ${dataDir} is a writable volume`);
        assert.equal(probePath(container.livenessProbe), '/healthz', `${at}: liveness on /healthz`);
        // A native sidecar has no readiness probe: its startup probe holds the application back until it is ready.
        const readiness = container.readinessProbe ?? (container.restartPolicy === 'Always' ? container.startupProbe : undefined);
        assert.equal(probePath(readiness), '/readyz', `${at}: readiness on /readyz`);
      }
    }
  });

  test('deploy: selectors select, Services name real ports, upstreams are Services, the root is one pod with a volume', () => {
    for (const manifest of manifests) {
      const where = `${manifest.file} ${manifest.kind}/${manifest.metadata.name}`;
      if (manifest.spec.template !== undefined)
        assert.ok(selects(manifest.spec.selector?.matchLabels, manifest.spec.template.metadata.labels), `${where}: its selector matches its pods`);
      if (manifest.kind === 'PodDisruptionBudget')
        assert.ok(pods.some(({ labels }) => selects(manifest.spec.selector?.matchLabels, labels)), `${where}: selects some pods`);
      if (manifest.kind === 'Service') {
        const selected = pods.filter(({ labels }) => selects(manifest.spec.selector, labels));
        assert.ok(selected.length > 0, `${where}: selects some pods`);
        for (const port of manifest.spec.ports ?? []) {
          for (const { pod } of selected)
            assert.ok(pod.containers.some((c) => c.ports?.some((p) => p.name === port.targetPort || p.containerPort === port.targetPort)), `${where}: port ${port.name} targets a container port`);
        }
      }
      if (manifest.kind === 'StatefulSet') {
        const governing = manifests.find((m) => m.kind === 'Service' && m.metadata.name === manifest.spec.serviceName);
        assert.equal(governing?.spec.clusterIP, 'None', `${where}: its serviceName is a headless Service`);
        assert.ok((manifest.spec.volumeClaimTemplates ?? []).length > 0, `${where}: a persistent volume per pod`);
      }
    }
    const services = new Map(manifests.filter((m) => m.kind === 'Service').map((m) => [m.metadata.name, m]));
    const roots: Manifest[] = [];
    for (const { manifest, pod } of pods) {
      for (const container of [...pod.containers, ...(pod.initContainers ?? [])]) {
        const args = container.args ?? [];
        if (args[0] !== 'serve') continue;
        const upstreams = flagValue(args, '--upstream');
        if (upstreams === undefined) roots.push(manifest);
        for (const upstream of upstreams?.split(',') ?? []) {
          const [host, port] = upstream.split(':');
          const service = services.get(host!);
          assert.ok(service !== undefined, `${manifest.file}: upstream ${upstream} is a Service of deploy/kubernetes`);
          assert.ok(service.spec.ports?.some((p) => p.name === 'replication' && p.port === Number(port)), `${manifest.file}: ${upstream} is its replication port`);
        }
      }
    }
    assert.equal(roots.length, 1, 'exactly one root workload');
    assert.equal(roots[0]!.kind, 'StatefulSet');
    assert.equal(roots[0]!.spec.replicas, 1, 'one root pod: two would be two datasets');
  });

  test('deploy: the sidecar pattern shares the replica data directory with the application container', () => {
    const sidecars = pods.filter(({ pod }) => pod.initContainers?.some((c) => c.restartPolicy === 'Always' && c.args?.[0] === 'serve'));
    assert.ok(sidecars.length > 0, 'a pod with a native sidecar replica');
    for (const { manifest, pod } of sidecars) {
      const replica = pod.initContainers!.find((c) => c.args?.[0] === 'serve')!;
      const dataDir = flagValue(replica.args!, '--data-dir');
      const volume = replica.volumeMounts!.find((mount) => mount.mountPath === dataDir)!.name;
      assert.ok(pod.volumes?.some((v) => v.name === volume && v.emptyDir !== undefined), `${manifest.file}: the data directory is an emptyDir`);
      const app = pod.containers.find((c) => c.volumeMounts?.some((mount) => mount.name === volume));
      assert.ok(app !== undefined, `${manifest.file}: an application container mounts ${volume}`);
      assert.ok(app.command?.join(' ').includes('openLocal'), `${manifest.file}: the application reads with openLocal`);
    }
  });

  test('deploy: the systemd unit runs flags the CLI knows, verifies, and keeps its hardening', async (t) => {
    const flags = await cliFlags();
    const unit = readFileSync(join(DEPLOY_DIR, 'systemd', 'mercury.service'), 'utf8');
    const execStart = /^ExecStart=(.*)$/m.exec(unit)?.[1];
    assert.ok(execStart !== undefined && execStart.includes(' serve '), 'ExecStart runs mercury serve');
    for (const flag of serveFlags(execStart.split(/\s+/))) assert.ok(flags.has(flag), `mercury serve has no ${flag}`);
    for (const option of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'PrivateTmp=yes', 'CapabilityBoundingSet=', 'SystemCallFilter=@system-service', 'StateDirectory=mercury'])
      assert.match(unit, new RegExp(`^${option}$`, 'm'), option);
    const dockerfile = readFileSync(join(DEPLOY_DIR, 'container', 'Dockerfile'), 'utf8');
    const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)![1]!) as string[];
    for (const flag of serveFlags(cmd)) assert.ok(flags.has(flag), `Dockerfile CMD: mercury serve has no ${flag}`);

    if (!existsSync('/usr/bin/systemd-analyze')) return t.skip('systemd-analyze is not installed');
    const dir = makeTempDir('systemd');
    try {
      // verify checks that the executable exists: point it at this node binary wherever it is installed.
      const path = join(dir, 'mercury.service');
      writeFileSync(path, unit.replace('ExecStart=/usr/bin/node ', `ExecStart=${process.execPath} `));
      const verify = execFileSync('systemd-analyze', ['verify', path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      assert.equal(verify.trim(), '', 'systemd-analyze verify reports nothing');
      const security = execFileSync('systemd-analyze', ['security', '--offline=yes', `--threshold=${SYSTEMD_EXPOSURE_TENTHS_MAX}`, path], { encoding: 'utf8' });
      assert.match(security, /Overall exposure level for mercury\.service: [0-9.]+ OK/);
    } catch (error) {
      const failure = error as { stdout?: string; stderr?: string };
      assert.fail(`systemd-analyze: ${failure.stderr ?? ''}${failure.stdout ?? ''}${String(error)}`);
    } finally {
      removeDir(dir);
    }
  });

  test('deploy: nothing in deploy/ passes --insecure or turns authentication off', () => {
    const files = deployFiles();
    assert.ok(files.length >= 10, files.join(', '));
    for (const file of files) {
      const text = readFileSync(join(DEPLOY_DIR, file), 'utf8');
      assert.doesNotMatch(text, /--insecure/, `${file} passes --insecure`);
      assert.doesNotMatch(text, /--auth[= ]+off/, `${file} turns authentication off`);
    }
  });

  test('deploy: every container that runs mercury has TLS, a token and a signing or trusted key, each mounted read-only from a Secret', () => {
    let nodes = 0;
    for (const { manifest, pod } of pods) {
      for (const container of [...pod.containers, ...(pod.initContainers ?? [])]) {
        const args = container.args ?? [];
        if (args[0] !== 'serve') continue;
        nodes++;
        const at = `${manifest.file} ${manifest.kind}/${manifest.metadata.name} container ${container.name}`;
        assert.equal(flagValue(args, '--auth'), undefined, `${at}: authentication stays required (the default)`);
        const tlsVolumes = ['--tls-cert', '--tls-key', '--tls-ca'].map((flag) => mountedFrom(pod, container, flagValue(args, flag), `${at} ${flag}`));
        for (const volume of tlsVolumes) assert.equal(volume.secret?.secretName, 'mercury-tls', `${at}: TLS files come from Secret mercury-tls`);
        const upstreams = flagValue(args, '--upstream');
        if (upstreams === undefined) {
          assert.ok(mountedFrom(pod, container, flagValue(args, '--admin-token-file'), `${at} --admin-token-file`).secret !== undefined, `${at}: the admin token is a Secret`);
          assert.ok(mountedFrom(pod, container, flagValue(args, '--signing-key'), `${at} --signing-key`).secret !== undefined, `${at}: the signing key is a Secret`);
          assert.match(flagValue(args, '--root-url') ?? '', /^https:\/\//, `${at}: the root names its https URL for trusting replicas`);
        } else {
          assert.ok(mountedFrom(pod, container, flagValue(args, '--replication-token-file'), `${at} --replication-token-file`).secret !== undefined, `${at}: the replication token is a Secret`);
          const trust = mountedFrom(pod, container, flagValue(args, '--trust-key'), `${at} --trust-key`);
          assert.ok(trust.configMap !== undefined || trust.secret !== undefined, `${at}: the trusted key is mounted`);
          // A replica that trusts the key takes snapshots only from the root (a relay cannot sign one).
          assert.ok(upstreams.split(',').includes('mercury-root:7071'), `${at}: the root is among the upstreams`);
        }
        // Probes over HTTPS without a token: /healthz and /readyz are public (src/server/api.ts).
        for (const probe of [container.livenessProbe, container.readinessProbe, container.startupProbe]) {
          if (probe?.httpGet !== undefined) assert.equal(probe.httpGet.scheme, 'HTTPS', `${at}: probes use HTTPS`);
          if (probe?.exec !== undefined) assert.match(probe.exec.command.join(' '), /node:https/, `${at}: exec probes use HTTPS`);
        }
        const annotations = manifest.spec.template!.metadata.annotations ?? {};
        if (annotations['prometheus.io/scrape'] === 'true') assert.equal(annotations['prometheus.io/scheme'], 'https', `${at}: scraped over HTTPS`);
      }
    }
    assert.ok(nodes >= 4, `${nodes} mercury containers`);
  });

  test('deploy: the systemd unit and its role drop-ins load TLS, tokens and keys with LoadCredential=, and verify together', async (t) => {
    const flags = await cliFlags();
    const unit = readFileSync(join(DEPLOY_DIR, 'systemd', 'mercury.service'), 'utf8');
    const execStart = /^ExecStart=(.*)$/m.exec(unit)![1]!.split(/\s+/);
    for (const flag of ['--tls-cert', '--tls-key', '--tls-ca']) assert.match(flagValue(execStart, flag) ?? '', /^%d\//, `${flag} from the credentials directory`);
    assertCredentialsLoaded(execStart, unit, 'mercury.service');
    assert.ok(execStart.includes('$MERCURY_ROLE_ARGS'), 'ExecStart passes the role drop-in\'s flags');
    const dropIns = systemdDropIns();
    const expected: Record<string, string[]> = { 'root.conf': ['--admin-token-file', '--signing-key'], 'replica.conf': ['--replication-token-file', '--trust-key'] };
    for (const { file, text, roleArgs } of dropIns) {
      assert.deepEqual(serveFlags(roleArgs), expected[file], file);
      for (const flag of serveFlags(roleArgs)) assert.ok(flags.has(flag), `${file}: mercury serve has no ${flag}`);
      assertCredentialsLoaded(roleArgs, text, file);
    }
    if (!existsSync('/usr/bin/systemd-analyze')) return t.skip('systemd-analyze is not installed');
    const dir = makeTempDir('systemd-roles');
    try {
      for (const { file, text } of dropIns) {
        // A drop-in's [Service] lines, appended to the unit: what systemd reads once it is installed.
        const path = join(dir, 'mercury.service');
        writeFileSync(path, `${unit.replace('ExecStart=/usr/bin/node ', `ExecStart=${process.execPath} `)}\n${text}`);
        const verify = execFileSync('systemd-analyze', ['verify', path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
        assert.equal(verify.trim(), '', `systemd-analyze verify with ${file} reports nothing`);
      }
    } catch (error) {
      const failure = error as { stdout?: string; stderr?: string };
      assert.fail(`systemd-analyze: ${failure.stderr ?? ''}${failure.stdout ?? ''}${String(error)}`);
    } finally {
      removeDir(dir);
    }
  });
});
