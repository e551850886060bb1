/**
 * The CA in file mode: the signing certificate and key (`--ca-cert`, `--ca-key`) and, during a
 * root rotation, other roots the mesh trusts (`--trusted-roots`). Read at start and again on
 * SIGHUP, so a rotation needs no restart.
 */
import { readFile } from 'node:fs/promises';
import { CertificateAuthority } from '../shared/identity/ca.js';

export interface CaFiles {
  caCert: string;
  caKey: string;
  trustedRoots?: string;
}

/** Loads the CA from its files; a trusted-roots file that is empty means no other roots. */
export async function loadCaFiles(files: CaFiles): Promise<CertificateAuthority> {
  const read = async (path: string, flag: string): Promise<string> => {
    try {
      return await readFile(path, 'utf8');
    } catch (err) {
      throw new Error(`${flag} ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
    }
  };
  const cert = await read(files.caCert, '--ca-cert');
  const key = await read(files.caKey, '--ca-key');
  const extra = files.trustedRoots ? await read(files.trustedRoots, '--trusted-roots') : '';
  try {
    return await CertificateAuthority.load(cert, key, { extraRootsPem: extra.trim() === '' ? [] : [extra] });
  } catch (err) {
    throw new Error(`${(err as Error).message} (files: ${[files.caCert, files.caKey, files.trustedRoots].filter(Boolean).join(', ')})`);
  }
}
