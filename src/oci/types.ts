/**
 * OCI image-spec and distribution types (image-spec v1.1: descriptor.md,
 * manifest.md, image-index.md, config.md), plus the Docker schema2 shapes
 * that map onto them. Values of these types have been validated at the edge
 * (src/oci/manifest.ts, src/oci/reference.ts); code that receives them trusts them.
 */

/** `sha256:<64 lowercase hex>`; the only algorithm ocisnap accepts for content it stores. */
export type Digest = `sha256:${string}`;

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

/** OCI image manifest or Docker schema2 manifest (same shape). */
export interface ImageManifest {
  kind: 'manifest';
  schemaVersion: 2;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** OCI image index or Docker manifest list. */
export interface ImageIndex {
  kind: 'index';
  schemaVersion: 2;
  mediaType: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

/** The parts of the image config (config.md) ocisnap reads. */
export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  created?: string;
  config?: {
    Env?: string[];
    Entrypoint?: string[];
    Cmd?: string[];
    WorkingDir?: string;
    User?: string;
    Labels?: Record<string, string>;
  };
  rootfs: { type: 'layers'; diff_ids: Digest[] };
  history?: Array<{ created?: string; created_by?: string; empty_layer?: boolean; comment?: string }>;
}

/**
 * A parsed docker reference (containers/image docker/reference grammar),
 * normalized: docker.io for a missing registry, library/ for single-name
 * Docker Hub repositories, tag `latest` when neither tag nor digest is given.
 */
export interface ImageReference {
  /** Registry host, with port when given: `docker.io`, `localhost:5000`. */
  registry: string;
  /** Repository path within the registry: `library/debian`, `org/os`. */
  repository: string;
  tag?: string;
  digest?: Digest;
}
