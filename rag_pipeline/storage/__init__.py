"""Storage of results: staged envelopes in -> the DuckDB catalog (assets, runs, results, text
evidence) and the LanceDB vector store out; plan files and the writer lock live here too."""
