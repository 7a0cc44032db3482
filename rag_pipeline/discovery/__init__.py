"""Discovery: source folders in -> assets (content identity) and asset_versions (observed file
states) and dead letters for unreadable files out, recorded in the catalog."""
