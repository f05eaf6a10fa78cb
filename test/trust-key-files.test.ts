/**
 * Key files as the root and its replicas read them (src/trust/keys.ts): `--trust-key`, `--signing-key` and
 * `--previous-signing-key`. Each file that is not one Ed25519 key in PEM is refused with CONFIG_INVALID naming the file
 * and what to do, before the data directory is opened.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { MercuryError } from '../src/errors/index.js';
import { keyId, readSigningKey, readTrustKey } from '../src/trust/index.js';
import { makeTempDir, removeDir } from './support/process.js';

function assertConfigInvalid(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof MercuryError, String(error));
    assert.equal(error.code, 'CONFIG_INVALID');
    assert.match(error.message, message);
    return true;
  });
}

describe('trust: key files', () => {
  const dir = makeTempDir('trust-key-files');
  after(() => removeDir(dir));
  const file = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode: 0o600 });
    return path;
  };
  const first = generateKeyPairSync('ed25519');
  const second = generateKeyPairSync('ed25519');
  const publicPem = (pair: typeof first): string => pair.publicKey.export({ type: 'spki', format: 'pem' }) as string;
  const privatePem = (pair: typeof first): string => pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;

  test('trust: one Ed25519 key per file is read', () => {
    assert.equal(keyId(readTrustKey(file('one.pub.pem', publicPem(first)))), keyId(first.publicKey));
    assert.equal(keyId(readTrustKey(file('one-crlf.pub.pem', publicPem(first).replace(/\n/g, '\r\n')))), keyId(first.publicKey));
    assert.equal(readSigningKey(file('one.pem', privatePem(first))).asymmetricKeyType, 'ed25519');
  });

  // Found by an audit (2026-12-06): a private key given as --trust-key was taken (its public half), as documented, which
  // invited operators to copy the root's private key to every replica.
  test('trust: a private key given as --trust-key is refused, saying to give the public key', () => {
    const refusal = /--trust-key \S+ holds a private key: give the public key \(the root's signing-key\.pub\.pem.*keep the private key on the root alone/;
    assertConfigInvalid(() => readTrustKey(file('root.pem', privatePem(first))), refusal);
    assertConfigInvalid(() => readTrustKey(file('root-encrypted.pem', first.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'p' }) as string)), refusal);
    assertConfigInvalid(() => readTrustKey(file('root-crlf.pem', privatePem(first).replace(/\n/g, '\r\n'))), refusal);
  });

  // Found by an audit (2026-12-06): Node reads the first PEM block of a file and ignores the rest, so a trust file with
  // two keys (the old and the new one, as CA bundles are written) trusted the first alone, without a word.
  test('trust: a file of two keys is refused, naming the count, instead of trusting the first alone', () => {
    assertConfigInvalid(
      () => readTrustKey(file('two.pub.pem', publicPem(first) + publicPem(second))),
      /--trust-key \S+two\.pub\.pem holds 2 PEM blocks; a key file holds one key .*put each key in a file of its own and repeat --trust-key/,
    );
    assertConfigInvalid(() => readSigningKey(file('two.pem', privatePem(first) + privatePem(second))), /--signing-key \S+two\.pem holds 2 PEM blocks/);
    assertConfigInvalid(() => readSigningKey(file('key-and-cert.pem', privatePem(first) + publicPem(second)), '--previous-signing-key'), /--previous-signing-key \S+ holds 2 PEM blocks/);
  });

  test('trust: keys of another type, damaged and empty files are refused naming the file', () => {
    assertConfigInvalid(() => readTrustKey(file('rsa.pem', generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }) as string)), /rsa\.pem is an rsa key; Mercury signs with Ed25519/);
    assertConfigInvalid(() => readTrustKey(file('x25519.pem', generateKeyPairSync('x25519').publicKey.export({ type: 'spki', format: 'pem' }) as string)), /is an x25519 key/);
    assertConfigInvalid(() => readTrustKey(file('damaged.pem', publicPem(first).replace(/[A-Za-z]/, '!'))), /damaged\.pem is not a PEM public key/);
    assertConfigInvalid(() => readTrustKey(file('empty.pem', '')), /empty\.pem is not a PEM public key/);
    assertConfigInvalid(() => readSigningKey(file('public-as-private.pem', publicPem(first))), /is not a PEM private key/);
  });
});
