// A throw-away certificate authority for tests, made with the `openssl` CLI: EC P-256 keys,
// SHA-256 signatures, 1-day validity, leaf certificates with subjectAltName entries (DNS names,
// or IP addresses for IP literals) usable for both serverAuth and clientAuth.
//
//   const ca = await makeCa(dir);            // dir: an existing, private temp directory
//   const { cert, key } = await ca.issue(['peer.test', 'chat.peer.test']);
//   https.createServer({ cert, key }, …);     // clients trust ca.caCert (or NODE_EXTRA_CA_CERTS=ca.caCertPath)
//
// Everything is written under `dir` (file paths are returned too, for child processes that read
// INTERTALK_TLS_CERT / INTERTALK_TLS_KEY). `issue` may be called concurrently. The openssl config
// is written by us, so the system openssl.cnf does not matter.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';

export interface IssuedCert {
  /** PEM leaf certificate. */
  cert: string;
  /** PEM private key (PKCS#8). */
  key: string;
  /** PEM leaf certificate followed by the CA certificate. */
  chain: string;
  certPath: string;
  keyPath: string;
}

export interface TestCa {
  /** PEM CA certificate (trust anchor). */
  caCert: string;
  caCertPath: string;
  issue(domains: string[]): Promise<IssuedCert>;
}

const DNS_NAME = /^(\*\.)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;

function openssl(args: string[], cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { cwd, timeout: 30_000, env: { ...process.env, OPENSSL_CONF: join(cwd, 'openssl.cnf') } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`openssl ${args[0]} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** A positive 128-bit serial number in openssl's hex syntax. */
function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x10;
  return `0x${b.toString('hex')}`;
}

const CONFIG = `# written by src/devnet/ca.ts
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
`;

export async function makeCa(dir: string): Promise<TestCa> {
  await writeFile(join(dir, 'openssl.cnf'), CONFIG, { mode: 0o600 });
  const caKeyPath = join(dir, 'ca.key');
  const caCertPath = join(dir, 'ca.pem');
  await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', caKeyPath], dir);
  await openssl(
    ['req', '-config', 'openssl.cnf', '-x509', '-new', '-key', caKeyPath, '-sha256', '-days', '1',
      '-set_serial', serial(), '-subj', `/CN=intertalk test CA ${randomBytes(4).toString('hex')}`,
      '-extensions', 'ca_ext', '-out', caCertPath],
    dir,
  );
  const caCert = await readFile(caCertPath, 'utf8');
  let counter = 0;

  async function issue(domains: string[]): Promise<IssuedCert> {
    if (domains.length === 0) throw new Error('issue: at least one name is needed');
    const san = domains.map((d) => {
      if (isIP(d)) return `IP:${d}`;
      if (!DNS_NAME.test(d) || d.length > 253) throw new Error(`issue: "${d}" is not a DNS name or IP address`);
      return `DNS:${d.toLowerCase()}`;
    });
    const base = join(dir, `leaf-${++counter}-${randomBytes(4).toString('hex')}`);
    const keyPath = `${base}.key`;
    const csrPath = `${base}.csr`;
    const extPath = `${base}.ext`;
    const certPath = `${base}.pem`;
    await writeFile(
      extPath,
      [
        `subjectAltName = ${san.join(', ')}`,
        'basicConstraints = critical, CA:FALSE',
        'keyUsage = critical, digitalSignature',
        'extendedKeyUsage = serverAuth, clientAuth',
        'subjectKeyIdentifier = hash',
        'authorityKeyIdentifier = keyid',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyPath], dir);
    // The CN is informational only (verifiers use subjectAltName); keep it within 64 characters.
    const cn = domains[0]!.slice(0, 64);
    await openssl(['req', '-config', 'openssl.cnf', '-new', '-key', keyPath, '-subj', `/CN=${cn}`, '-out', csrPath], dir);
    await openssl(
      ['x509', '-req', '-in', csrPath, '-CA', caCertPath, '-CAkey', caKeyPath, '-set_serial', serial(),
        '-days', '1', '-sha256', '-extfile', extPath, '-out', certPath],
      dir,
    );
    const [cert, key] = await Promise.all([readFile(certPath, 'utf8'), readFile(keyPath, 'utf8')]);
    return { cert, key, chain: cert + caCert, certPath, keyPath };
  }

  return { caCert, caCertPath, issue };
}
