"""The DuckDB catalog: schema, connection under the writer lock, and its queries."""
