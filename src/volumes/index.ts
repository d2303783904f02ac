/**
 * Encrypted volumes (issue 4): each workspace group's data directories and WAL live on an ext4 image with
 * the kernel's native file encryption (fscrypt v2, AES-256-XTS), keyed by the group's data key. See
 * DESIGN.md and docs/security.md ("Encryption at rest").
 */
export { EncryptedVolume, listVolumes, ENCRYPTED_DIR, MIN_VOLUME_BYTES, MOUNT_OPTIONS, STORE_VOLUME_ID, type EncryptedVolumeOptions, type LockResult, type VolumeState } from "./volume.js";
export { Fscrypt, FSCRYPT_HELPER, VOLUME_KEY_BYTES, type KeyStatus, type PolicyStatus } from "./fscrypt.js";
export { xtsAesSupport, type XtsAesSupport } from "./cpu.js";
export { readMounts, mountAt, loopDevicesFor, type MountEntry } from "./mounts.js";
export { openStoreVolume, refuseEncryptedStore, STORE_VOLUME_BYTES, STORE_KEY_CONTEXT, type StoreVolume, type StoreVolumeOptions } from "./store.js";
