"""Analysis: a partition's plan and the files' bytes in -> staged ResultEnvelopes (text and
vector evidence, or an error class) out. ``analyzers/`` hold the pure analyzers and models;
``profiles`` binds them to models.yaml; the workers run one partition."""
