/** Helios's workspace size names that parhelion offers. */
export type WorkspaceSize = "S-00" | "S-0" | "S-1" | "S-2" | "S-4";

export interface SizeSpec {
  /** PostgreSQL settings, as postgresql.conf values. */
  sharedBuffers: string;
  maxConnections: number;
  workMem: string;
  maintenanceWorkMem: string;
  effectiveCacheSize: string;
  /** The memory the workspace's server may use in all (postmaster, backends, shared memory, page cache it dirties). */
  memoryLimitBytes: number;
  /** The workspace's share of its group's encrypted volume (data and WAL); the volume is the sum of its workspaces' shares. */
  storageBytes: number;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/**
 * What each size means. shared_buffers is an eighth of the memory limit (PostgreSQL's guidance is a quarter
 * of a dedicated machine's RAM, but the limit here also covers every backend and the page cache the server
 * dirties); effective_cache_size tells the planner three quarters of the limit is cache. storageBytes is 16
 * times the memory limit: the group's volume image is sparse, so a share costs disk only as it is written.
 */
export const WORKSPACE_SIZES: Readonly<Record<WorkspaceSize, Readonly<SizeSpec>>> = Object.freeze({
  "S-00": Object.freeze({ sharedBuffers: "32MB", maxConnections: 25, workMem: "2MB", maintenanceWorkMem: "16MB", effectiveCacheSize: "192MB", memoryLimitBytes: 256 * MiB, storageBytes: 4 * GiB }),
  "S-0": Object.freeze({ sharedBuffers: "128MB", maxConnections: 50, workMem: "4MB", maintenanceWorkMem: "64MB", effectiveCacheSize: "768MB", memoryLimitBytes: 1 * GiB, storageBytes: 16 * GiB }),
  "S-1": Object.freeze({ sharedBuffers: "256MB", maxConnections: 100, workMem: "4MB", maintenanceWorkMem: "128MB", effectiveCacheSize: "1536MB", memoryLimitBytes: 2 * GiB, storageBytes: 32 * GiB }),
  "S-2": Object.freeze({ sharedBuffers: "512MB", maxConnections: 150, workMem: "8MB", maintenanceWorkMem: "256MB", effectiveCacheSize: "3GB", memoryLimitBytes: 4 * GiB, storageBytes: 64 * GiB }),
  "S-4": Object.freeze({ sharedBuffers: "1GB", maxConnections: 200, workMem: "16MB", maintenanceWorkMem: "512MB", effectiveCacheSize: "6GB", memoryLimitBytes: 8 * GiB, storageBytes: 128 * GiB }),
});

export function isWorkspaceSize(value: unknown): value is WorkspaceSize {
  return typeof value === "string" && Object.hasOwn(WORKSPACE_SIZES, value);
}

/** The postgresql.conf settings of a size. */
export function sizeSettings(size: WorkspaceSize): Record<string, string | number> {
  const s = WORKSPACE_SIZES[size];
  return {
    shared_buffers: `'${s.sharedBuffers}'`,
    max_connections: s.maxConnections,
    work_mem: `'${s.workMem}'`,
    maintenance_work_mem: `'${s.maintenanceWorkMem}'`,
    effective_cache_size: `'${s.effectiveCacheSize}'`,
  };
}
