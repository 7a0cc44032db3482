"""The search snapshot: catalog evidence and vectors selected by the policy in -> a versioned,
read-only LanceDB table and its manifest out. ``schema`` is the contract serving reads."""
