"""Planning: the catalog's current asset versions and the profiles in -> one plan file of
TaskSpecs per profile x shard partition out (only tasks without a final result)."""
