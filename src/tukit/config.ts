/**
 * What the tukit plugin is asked to do, from its environment and from
 * `/etc/ocisnap/tukit.conf` (TOML, like /etc/ocisnap/health.conf):
 *
 *   # The image every tukit transaction puts into its new snapshot.
 *   # Unset (the default): only transactions started with OCISNAP_IMAGE=REF do.
 *   image = "registry.example.com/os/base:latest"
 *   # Pull the image first (default true); false: it must be in the layer store.
 *   pull = true
 *
 * Environment (tukit passes its own environment to plugins, lib/Plugins.cpp
 * runs them through popen): OCISNAP_IMAGE=REF overrides `image` for one
 * transaction (OCISNAP_IMAGE= with an empty value turns a configured image
 * off); OCISNAP_PULL=0|1 overrides `pull`; OCISNAP_TUKIT_CONFIG names another
 * config file; OCISNAP_SYSROOT=DIR acts on a sysroot that is not `/` (tests).
 */
import { readFile } from 'node:fs/promises';
import { parse, TomlError } from 'smol-toml';
import { describeError, UsageError } from '../errors.js';
import { isErrno } from '../sys/native.js';

export const DEFAULT_TUKIT_CONFIG = '/etc/ocisnap/tukit.conf';

export interface TukitConfig {
  /** The image to fill new snapshots with; undefined: leave tukit's snapshots alone. */
  image?: string;
  pull: boolean;
  /** The sysroot (`/` on a real system). */
  sysroot: string;
}

/** tukit.conf is unreadable or wrong. */
export class TukitConfigError extends UsageError {}

type Env = Record<string, string | undefined>;

function parseBool(value: string, what: string): boolean {
  if (/^(1|true|yes)$/i.test(value)) return true;
  if (/^(0|false|no)$/i.test(value)) return false;
  throw new TukitConfigError(`${what}: expected 0 or 1, not ${JSON.stringify(value)}`);
}

async function readConfigFile(path: string, required: boolean): Promise<{ image?: string; pull?: boolean }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (!required && isErrno(err, 'ENOENT')) return {};
    throw new TukitConfigError(`cannot read ${path}: ${describeError(err)}`, { cause: err });
  }
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (err) {
    const detail = err instanceof TomlError ? err.message.split('\n')[0] : describeError(err);
    throw new TukitConfigError(`${path}: not valid TOML: ${detail}`, { cause: err });
  }
  const out: { image?: string; pull?: boolean } = {};
  for (const [key, value] of Object.entries(doc)) {
    if (key === 'image') {
      if (typeof value !== 'string' || value === '') throw new TukitConfigError(`${path}: image must be a non-empty string`);
      out.image = value;
    } else if (key === 'pull') {
      if (typeof value !== 'boolean') throw new TukitConfigError(`${path}: pull must be true or false`);
      out.pull = value;
    } else {
      throw new TukitConfigError(`${path}: unknown setting ${JSON.stringify(key)} (known: image, pull)`);
    }
  }
  return out;
}

export async function loadTukitConfig(env: Env): Promise<TukitConfig> {
  const explicit = env['OCISNAP_TUKIT_CONFIG'];
  const file = await readConfigFile(explicit || DEFAULT_TUKIT_CONFIG, Boolean(explicit));
  const config: TukitConfig = { pull: file.pull ?? true, sysroot: env['OCISNAP_SYSROOT'] || '/' };
  const envImage = env['OCISNAP_IMAGE'];
  const image = envImage !== undefined ? envImage : file.image;
  if (image !== undefined && image !== '') config.image = image;
  const envPull = env['OCISNAP_PULL'];
  if (envPull !== undefined && envPull !== '') config.pull = parseBool(envPull, 'OCISNAP_PULL');
  return config;
}
