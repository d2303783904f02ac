import { WORKSPACE_SIZES, type WorkspaceSize } from "../engine/sizes.js";

/** Workspace size names (Helios's), in the engine's order; the engine maps each to real limits. */
export const WORKSPACE_SIZE_NAMES = Object.keys(WORKSPACE_SIZES) as WorkspaceSize[];
